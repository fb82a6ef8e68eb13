/**
 * A context manager that keeps the active context only for the synchronous extent of
 * `context.with()`. The SDK's default, AsyncLocalStorage, follows every promise; on Node 20
 * that installs promise hooks that made coap-edge spend ~25 % more CPU per message with 1 %
 * sampling (bench/uplink --variants tracing). coap-edge carries the context across its few
 * asynchronous steps explicitly instead (MQTT request/reply, per-device publish, command
 * delivery, key lookups), so nothing needs the hooks.
 */
import { ROOT_CONTEXT, type Context, type ContextManager } from '@opentelemetry/api';

export class SyncContextManager implements ContextManager {
  private current: Context = ROOT_CONTEXT;

  active(): Context {
    return this.current;
  }

  with<A extends unknown[], F extends (...args: A) => ReturnType<F>>(
    ctx: Context,
    fn: F,
    thisArg?: ThisParameterType<F>,
    ...args: A
  ): ReturnType<F> {
    const previous = this.current;
    this.current = ctx;
    try {
      return fn.call(thisArg, ...args);
    } finally {
      this.current = previous;
    }
  }

  bind<T>(ctx: Context, target: T): T {
    if (typeof target !== 'function') return target;
    const fn = target as unknown as (...args: unknown[]) => unknown;
    const bound = (...args: unknown[]): unknown => this.with(ctx, () => fn(...args));
    return bound as unknown as T;
  }

  enable(): this {
    return this;
  }

  disable(): this {
    this.current = ROOT_CONTEXT;
    return this;
  }
}
