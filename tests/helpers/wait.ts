/**
 * Waiting for a condition, never for a time: poll until it holds, with a bound generous enough
 * for a loaded 2-core machine, and fail saying what never happened.
 */

/**
 * Polls `check` every 25 ms until it returns true; returns the elapsed ms. Throws, naming `what`
 * (a function: called then, so it can tell what was seen last), when `ms` pass first.
 */
export async function within(ms: number, check: () => boolean | Promise<boolean>, what: string | (() => string) = 'the condition'): Promise<number> {
  const t0 = performance.now();
  for (;;) {
    if (await check()) return performance.now() - t0;
    if (performance.now() - t0 >= ms) throw new Error(`${typeof what === 'function' ? what() : what} did not happen within ${ms} ms`);
    await Bun.sleep(25);
  }
}
