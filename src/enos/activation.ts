/**
 * The answer to `GET /topic/ext/session/{pk}/{dk}/thing/activate/info` (dynamic activation,
 * secureMode 3; docs/protocol.md, "Dynamic activation"), sent as the 2.05 payload:
 *
 * ```json
 * {"id":..,"version":"1.0","method":"thing.activate.info",
 *  "params":{"assetId":..,"productKey":..,"deviceKey":..,"deviceSecret":..}}
 * ```
 *
 * The object's key order is the order above, so `JSON.stringify` gives exactly that layout.
 * It carries the device secret: never log it.
 */

import { EnosError } from './errors.js';
import { validateKey } from './identity.js';

export interface ActivationReply {
  readonly id: string;
  readonly version: '1.0';
  readonly method: 'thing.activate.info';
  readonly params: {
    readonly assetId: string;
    readonly productKey: string;
    readonly deviceKey: string;
    readonly deviceSecret: string;
  };
}

export interface ActivationReplyParams {
  /** The message id ("the unique identifier of a message"). */
  id: string;
  /**
   * The device's asset id. `undefined` (a source that does not know it, such as a devices
   * file entry without `assetId`) is sent as `""` so the payload keeps its shape.
   */
  assetId: string | undefined;
  productKey: string;
  deviceKey: string;
  deviceSecret: string;
}

/**
 * Builds the activation reply object.
 * @throws EnosError `ENOS_ACTIVATION` (detail names the field) when a key breaks the identity
 *   key rules (the device could not use it in its secureMode 2 identity) or the device secret is
 *   empty.
 */
export function activationReply(p: ActivationReplyParams): ActivationReply {
  if (typeof p.id !== 'string') throw new EnosError('ENOS_ACTIVATION', 'id');
  if (validateKey(p.productKey) !== undefined) throw new EnosError('ENOS_ACTIVATION', 'productKey');
  if (validateKey(p.deviceKey) !== undefined) throw new EnosError('ENOS_ACTIVATION', 'deviceKey');
  if (typeof p.deviceSecret !== 'string' || p.deviceSecret.length === 0) {
    throw new EnosError('ENOS_ACTIVATION', 'deviceSecret');
  }
  return {
    id: p.id,
    version: '1.0',
    method: 'thing.activate.info',
    params: {
      assetId: p.assetId ?? '',
      productKey: p.productKey,
      deviceKey: p.deviceKey,
      deviceSecret: p.deviceSecret,
    },
  };
}
