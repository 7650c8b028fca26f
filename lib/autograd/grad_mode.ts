// Whether operations record the autograd graph (torch.no_grad / enable_grad / set_grad_enabled).
let enabled = true;

/** True when new operations record the graph for backward(). */
export function isGradEnabled(): boolean {
  return enabled;
}

/** Turns recording on or off; returns the previous setting. */
export function setGradEnabled(on: boolean): boolean {
  const prev = enabled;
  enabled = on;
  return prev;
}

/** Runs fn without recording the graph (like `with torch.no_grad():`). */
export function noGrad<T>(fn: () => T): T {
  const prev = setGradEnabled(false);
  try {
    return fn();
  } finally {
    enabled = prev;
  }
}

/** Runs fn with recording on, also inside noGrad. */
export function enableGrad<T>(fn: () => T): T {
  const prev = setGradEnabled(true);
  try {
    return fn();
  } finally {
    enabled = prev;
  }
}
