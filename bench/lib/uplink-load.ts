/**
 * Uplink load: N simulated devices, each with its own DTLS association (our DtlsClient with
 * the standard extensions) and this repository's device-side CoAP client
 * (src/tools/coap-client.ts: CON requests with RFC 7252 retransmission, piggybacked and
 * separate responses), each posting an EnOS measurepoint body in a closed loop (one request
 * outstanding) or at a fixed rate per device. Every body carries a unique JSON id
 * `<phase>-<seq>`, so the broker-side subscriber can tell which acknowledged message arrived.
 *
 * After a warm-up, a measurement window snapshots the CPU of the processes involved; only
 * answers received inside the window count for messages/s, latency and CPU per message.
 * Failures and the acknowledged ids are counted over the whole phase (warm-up and drain
 * included), because the delivery check compares them with everything the broker delivered.
 */
import { ContentFormat } from '../../src/coap/constants.js';
import { CoapClientError, CoapDtlsClient, type CoapResponse } from '../../src/tools/coap-client.js';
import { connect, failureName, type Target } from './client.js';
import { openMultiWindow, type MultiWindow } from './cpu-window.js';
import { Samples, increment, sleep } from './stats.js';

export interface UplinkDevice {
  /** EnOS identity `{pk},{dk},2,{lifetime}`. */
  readonly identity: string;
  readonly psk: Buffer;
  /** Uri-Path of the POST, e.g. `/topic/sys/pk/dk/thing/measurepoint/post`. */
  readonly path: string;
}

export interface UplinkLoad {
  readonly target: Target;
  readonly devices: readonly UplinkDevice[];
  readonly suite: number;
  /** Prefix of every JSON id of this phase (unique per phase). */
  readonly tag: string;
  readonly warmupMs: number;
  readonly durationMs: number;
  /** Requests per second per device; 0 = closed loop. */
  readonly ratePerDevice: number;
  /** Overall time a request may take (retransmissions included) before it counts as a timeout. */
  readonly requestTimeoutMs: number;
  /** The 2.xx code every request should get. */
  readonly expectedCode: number;
  /** Check that a 2.04 carries the platform reply `{"id":<same>,"code":200,"data":null}`. */
  readonly expectReply: boolean;
  /** Processes whose CPU the window measures (name → pid). */
  readonly cpuPids: Readonly<Record<string, number>>;
}

export interface UplinkPhase {
  /** Answers with the expected code inside the window. */
  readonly messages: number;
  readonly latency: Samples;
  /** When each latency sample's request was sent (epoch ms), same order as `latency`. */
  readonly sentAt: Samples;
  /** The measured window, epoch ms. */
  readonly windowStartMs: number;
  readonly windowEndMs: number;
  readonly window: MultiWindow;
  /** Answers by code inside the window ("2.04": n). */
  readonly windowCodes: Record<string, number>;
  /** Whole phase: unexpected codes ("code 5.03") and errors ("COAP_TIMEOUT"). */
  readonly failures: Record<string, number>;
  readonly timeouts: number;
  /** Whole phase: requests answered, with any code. */
  readonly answered: number;
  /** Whole phase: ids answered with the expected code (the broker must have them all). */
  readonly acknowledgedIds: Set<string>;
  /** Whole phase: answers whose reply body did not carry the request's id. */
  readonly replyMismatches: number;
  /** Whole phase: answers that came as a separate response (after an empty ACK). */
  readonly separateResponses: number;
  /** Whole phase: CoAP retransmissions of requests by the devices. */
  readonly retransmissions: number;
  readonly associations: number;
  readonly setupFailures: Record<string, number>;
  readonly associationsLost: number;
  /** Requests that started late because the previous one was still outstanding (rate mode). */
  readonly lateStarts: number;
}

const CONNECT_PARALLEL = 16;

/** The measurepoint body of src/tools/load.ts, with a given id (same JSON text). */
export function measurepointBody(id: string): Buffer {
  return Buffer.from(
    `{"id":"${id}","version":"1.0","method":"thing.measurepoint.post","params":` +
      `{"measurepoints":{"temperature":21.5,"humidity":40},"time":${Date.now()}}}`,
  );
}

export function codeName(code: number): string {
  return `${code >> 5}.${String(code & 31).padStart(2, '0')}`;
}

async function establish(
  load: UplinkLoad,
  setupFailures: Record<string, number>,
): Promise<{ client: CoapDtlsClient; device: UplinkDevice }[]> {
  const out: { client: CoapDtlsClient; device: UplinkDevice }[] = [];
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < load.devices.length) {
      const device = load.devices[next++]!;
      try {
        const dtls = await connect(
          load.target,
          { identity: device.identity, psk: device.psk },
          { suite: load.suite, handshakeTimeoutMs: 10_000 },
        );
        out.push({ client: CoapDtlsClient.over(dtls), device });
      } catch (err) {
        increment(setupFailures, failureName(err));
      }
    }
  };
  await Promise.all(
    Array.from({ length: Math.min(CONNECT_PARALLEL, load.devices.length) }, () => worker()),
  );
  return out;
}

export async function runUplinkPhase(load: UplinkLoad): Promise<UplinkPhase> {
  const setupFailures: Record<string, number> = {};
  const clients = await establish(load, setupFailures);
  if (clients.length === 0) throw new Error('no device could establish a DTLS association');

  let running = true;
  let measuring = false;
  let seq = 0;
  let messages = 0;
  let timeouts = 0;
  let answered = 0;
  let replyMismatches = 0;
  let separateResponses = 0;
  let retransmissions = 0;
  let lost = 0;
  let lateStarts = 0;
  const latency = new Samples();
  const sentAt = new Samples();
  const windowCodes: Record<string, number> = {};
  const failures: Record<string, number> = {};
  const acknowledgedIds = new Set<string>();
  const interval = load.ratePerDevice > 0 ? 1000 / load.ratePerDevice : 0;

  for (const { client } of clients) {
    client.dtls.on('close', () => {
      if (running) lost++;
    });
  }

  const onAnswer = (id: string, r: CoapResponse, t0: number, ms: number): void => {
    answered++;
    if (r.separate) separateResponses++;
    retransmissions += r.retransmissions;
    const ok = r.code === load.expectedCode;
    if (ok) acknowledgedIds.add(id);
    else increment(failures, `code ${codeName(r.code)}`);
    if (
      ok &&
      load.expectReply &&
      r.payload.toString('utf8') !== `{"id":"${id}","code":200,"data":null}`
    ) {
      replyMismatches++;
    }
    if (measuring) {
      increment(windowCodes, codeName(r.code));
      if (ok) {
        messages++;
        latency.push(ms);
        sentAt.push(performance.timeOrigin + t0);
      }
    }
  };

  const loop = async (client: CoapDtlsClient, device: UplinkDevice, i: number): Promise<void> => {
    // rate mode: spread the devices' first requests over one interval
    let next = performance.now() + (interval > 0 ? (i / clients.length) * interval : 0);
    while (running && client.dtls.established) {
      if (interval > 0) {
        const wait = next - performance.now();
        if (wait > 0) await sleep(wait);
        else if (wait < -1) lateStarts++;
        if (!running) break;
        // no catch-up burst after a slow answer: the schedule restarts from now
        next = Math.max(next + interval, performance.now());
      }
      const id = `${load.tag}-${seq++}`;
      const t0 = performance.now();
      try {
        const r = await client.request({
          method: 'POST',
          path: device.path,
          payload: measurepointBody(id),
          contentFormat: ContentFormat.JSON,
          timeoutMs: load.requestTimeoutMs,
          followBlocks: false,
        });
        onAnswer(id, r, t0, performance.now() - t0);
      } catch (err) {
        const kind = err instanceof CoapClientError ? err.code : failureName(err);
        if (kind === 'COAP_TIMEOUT') timeouts++;
        increment(failures, kind);
      }
    }
  };

  const loops = clients.map(({ client, device }, i) => loop(client, device, i));
  try {
    await sleep(load.warmupMs);
    const close = openMultiWindow(load.cpuPids);
    const windowStartMs = performance.timeOrigin + performance.now();
    measuring = true;
    await sleep(load.durationMs);
    measuring = false;
    const windowEndMs = performance.timeOrigin + performance.now();
    const window = close();
    // drain: no new requests; the outstanding ones finish (or time out)
    running = false;
    await Promise.all(loops);
    return {
      messages,
      latency,
      sentAt,
      windowStartMs,
      windowEndMs,
      window,
      windowCodes,
      failures,
      timeouts,
      answered,
      acknowledgedIds,
      replyMismatches,
      separateResponses,
      retransmissions,
      associations: clients.length,
      setupFailures,
      associationsLost: lost,
      lateStarts,
    };
  } finally {
    running = false;
    await Promise.all(clients.map(({ client }) => client.close().catch(() => undefined)));
  }
}

/** One request on a fresh association, retried while the answer is not `want` (start-up). */
export async function probe(
  target: Target,
  device: UplinkDevice,
  suite: number,
  body: Buffer,
  want: number,
  patienceMs: number,
): Promise<{ code: string; payload: string; requestBytes: number; attempts: number }> {
  const dtls = await connect(
    target,
    { identity: device.identity, psk: device.psk },
    { suite, handshakeTimeoutMs: 10_000 },
  );
  const client = CoapDtlsClient.over(dtls);
  const deadline = performance.now() + patienceMs;
  let attempts = 0;
  try {
    for (;;) {
      attempts++;
      const r = await client.request({
        method: 'POST',
        path: device.path,
        payload: body,
        contentFormat: ContentFormat.JSON,
        timeoutMs: 10_000,
      });
      if (r.code === want || performance.now() > deadline) {
        return {
          code: codeName(r.code),
          payload: r.payload.toString('utf8'),
          requestBytes: body.length,
          attempts,
        };
      }
      await sleep(250);
    }
  } finally {
    await client.close();
  }
}
