/**
 * Loads the DTLS 1.2 PSK handshake captures in test/fixtures/dtls/ (OpenSSL 3 and
 * node-dtls-client) into one shape. The OpenSSL files list the datagrams as captured; the
 * node-dtls-client file lists records by name, which are grouped here into the datagrams of
 * one flight each (the records are byte-exact, the grouping is a reconstruction).
 */
import { readFileSync } from 'node:fs';

export type Direction = 'client' | 'server';

export interface CaptureDatagram {
  /** Who sent it. */
  readonly from: Direction;
  readonly data: Buffer;
}

export interface Capture {
  /** File name without extension. */
  readonly name: string;
  readonly suite: number;
  readonly psk: Buffer;
  readonly identity: string;
  readonly hint: string | undefined;
  /** As stated by the file; the tests re-derive it from the ServerHello. */
  readonly extendedMasterSecret: boolean;
  readonly master: Buffer;
  readonly clientRandom: Buffer;
  readonly serverRandom: Buffer | undefined;
  readonly clientVerifyData: Buffer | undefined;
  readonly serverVerifyData: Buffer | undefined;
  readonly datagrams: readonly CaptureDatagram[];
}

export const CAPTURE_FILES = [
  'alcalzone_node_dtls_client_psk_ccm8_no_ems',
  'openssl3_dtls12_psk_ccm8_ems',
  'openssl3_dtls12_psk_aes128_cbc_sha256_ems_noetm',
  'openssl3_dtls12_psk_aes128_cbc_sha256_ems_etm',
] as const;
export type CaptureName = (typeof CAPTURE_FILES)[number];

/** dist/test/helpers/vectors.js → <repo>/test/fixtures/dtls/ */
const FIXTURES = new URL('../../../test/fixtures/dtls/', import.meta.url);

type Json = Record<string, unknown>;

function str(o: Json, key: string): string {
  const v = o[key];
  if (typeof v !== 'string') throw new TypeError(`fixture: ${key} is not a string`);
  return v;
}

function optStr(o: Json, key: string): string | undefined {
  const v = o[key];
  if (v === undefined || v === null) return undefined;
  if (typeof v !== 'string') throw new TypeError(`fixture: ${key} is not a string`);
  return v;
}

function hex(s: string): Buffer {
  if (!/^([0-9a-f]{2})*$/i.test(s)) throw new TypeError('fixture: bad hex');
  return Buffer.from(s, 'hex');
}

function suiteOf(description: string): number {
  const m = /\(0x([0-9a-f]{4})\)/i.exec(description);
  if (m?.[1] === undefined) throw new TypeError('fixture: no suite code point');
  return parseInt(m[1], 16);
}

/** node-dtls-client file: records by name → datagrams in flight order. */
const ALCALZONE_FLIGHTS: readonly (readonly [Direction, readonly string[]])[] = [
  ['client', ['client_hello']],
  ['server', ['hello_verify_request']],
  ['client', ['client_hello2']],
  ['server', ['server_hello', 'server_hello_done']],
  ['client', ['client_key_exchange', 'change_cipher_spec_client', 'finished_client']],
  ['server', ['change_cipher_spec_server', 'finished_server']],
];

export function loadCapture(name: CaptureName): Capture {
  const json = JSON.parse(readFileSync(new URL(`${name}.json`, FIXTURES), 'utf8')) as Json;
  const suite = suiteOf(str(json, 'suite'));
  const psk = hex(str(json, 'psk_hex'));
  const identity = str(json, 'psk_identity');
  const clientRandom = hex(str(json, 'client_random_hex'));
  if (name === 'alcalzone_node_dtls_client_psk_ccm8_no_ems') {
    const records = json['records'] as Json;
    return {
      name,
      suite,
      psk,
      identity,
      hint: undefined,
      extendedMasterSecret: false,
      master: hex(str(json, 'expected_master_secret_hex')),
      clientRandom,
      serverRandom: hex(str(json, 'server_random_hex')),
      clientVerifyData: hex(str(json, 'expected_client_verify_data_hex')),
      serverVerifyData: hex(str(json, 'expected_server_verify_data_hex')),
      datagrams: ALCALZONE_FLIGHTS.map(([from, names]) => ({
        from,
        data: Buffer.concat(names.map((n) => hex(str(records, n)))),
      })),
    };
  }
  const datagrams = json['datagrams'];
  if (!Array.isArray(datagrams)) throw new TypeError('fixture: no datagrams');
  return {
    name,
    suite,
    psk,
    identity,
    hint: optStr(json, 'psk_hint'),
    extendedMasterSecret: json['extended_master_secret'] === true,
    master: hex(str(json, 'master_secret_hex')),
    clientRandom,
    serverRandom: undefined,
    clientVerifyData: undefined,
    serverVerifyData: undefined,
    datagrams: (datagrams as Json[]).map((d) => {
      const dir = str(d, 'dir');
      if (dir !== 'client->server' && dir !== 'server->client') {
        throw new TypeError(`fixture: bad dir ${dir}`);
      }
      return { from: dir === 'client->server' ? 'client' : 'server', data: hex(str(d, 'hex')) };
    }),
  };
}

export function loadCaptures(): Capture[] {
  return CAPTURE_FILES.map(loadCapture);
}
