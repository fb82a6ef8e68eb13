/** The MQTT backend, bridge mode: pooled connections that publish for all devices. */
export {
  MqttBridgeBackend,
  redactUrl,
  type MqttBridgeOptions,
  type MqttProtocolSetting,
  type MqttBackendLogger,
  type PublishOptions,
  type RequestOptions,
} from './backend.js';
export type { UserProperties } from './connection.js';
export {
  MqttBackendError,
  BackendUnavailableError,
  BackendRejectedError,
  ReplyTimeoutError,
  type MqttBackendErrorCode,
  type BackendUnavailableCode,
} from './errors.js';
export {
  type BackendState,
  type MqttBackendStats,
  type LatencySnapshot,
  type PublishFailureReason,
} from './stats.js';
export {
  startEmbeddedBroker,
  EmbeddedBrokerError,
  type EmbeddedBroker,
  type EmbeddedBrokerOptions,
  type EmbeddedBrokerErrorCode,
} from './embedded-broker.js';
