/** EnOS platform rules as pure functions (docs/design.md, "Layers"). Imports only `node:crypto`. */

export { EnosError, safeEcho, MAX_ECHO, type EnosErrorCode } from './errors.js';
export {
  parseIdentity,
  formatIdentity,
  validateKey,
  isValidKey,
  identityErrorCode,
  MAX_IDENTITY_BYTES,
  type SecureMode,
  type DeviceIdentity,
  type IdentityParseResult,
  type IdentityRejectReason,
  type KeyRejectReason,
} from './identity.js';
export { derivePsk, pskShellLiteral, pskUsableOnCommandLine, PSK_LENGTH } from './psk.js';
export { enosMqttLogin, type MqttLogin, type EnosMqttLoginParams } from './mqtt-login.js';
export {
  parseTopicPath,
  parseMqttTopic,
  isDownlinkTopic,
  downlinkTopicPatterns,
  activationTopic,
  topicToCoapPath,
  type TopicClass,
  type TopicInfo,
  type TopicParseResult,
  type TopicRejectReason,
} from './topics.js';
export { activationReply, type ActivationReply, type ActivationReplyParams } from './activation.js';
