/**
 * The default DTLS port (5684, IANA's `coaps`), the `dtlsPort` setting's default. In a module
 * of its own, without the settings' schemas, so that the command line's `device` and `bench`
 * take it as their `--port` default without loading zod (docs/operations.md, "Start time").
 */
export const DEFAULT_DTLS_PORT = 5684;
