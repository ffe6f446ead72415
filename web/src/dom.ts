// Small DOM helpers. Text only ever goes in through textContent, never as
// HTML, and no inline style is ever set (the page's CSP forbids it).
import type { RpcProblem } from "./rpc";

export function byId<T extends HTMLElement = HTMLElement>(id: string): T {
  const element = document.getElementById(id);
  if (element === null) throw new Error(`missing element #${id}`);
  return element as T;
}

export function el<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  className?: string,
  text?: string,
): HTMLElementTagNameMap[K] {
  const element = document.createElement(tag);
  if (className !== undefined && className !== "") element.className = className;
  if (text !== undefined) element.textContent = text;
  return element;
}

export function show(element: HTMLElement, visible = true): void {
  element.hidden = !visible;
}

/** A message in an error element; empty hides it. */
export function setError(element: HTMLElement, message: string): void {
  element.textContent = message;
  element.hidden = message === "";
}

export function problemText(problem: RpcProblem, hint = problem.hint): string {
  const base = `${problem.name}: ${problem.message}`;
  return hint === "" ? base : `${base}. ${hint}`.replace(/\.\. /, ". ");
}

/** Replaces a <dl>'s content with term/value pairs. */
export function setFacts(list: HTMLElement, facts: Array<[string, string | Node]>): void {
  list.replaceChildren();
  for (const [term, value] of facts) {
    const wrap = el("div");
    wrap.append(el("dt", "", term));
    const dd = el("dd");
    if (typeof value === "string") dd.textContent = value;
    else dd.append(value);
    wrap.append(dd);
    list.append(wrap);
  }
}

export function clearForm(...inputs: Array<HTMLInputElement | HTMLTextAreaElement | HTMLSelectElement>): void {
  for (const input of inputs) {
    if (input instanceof HTMLInputElement && input.type === "checkbox") input.checked = false;
    else input.value = "";
  }
}

export function busy(button: HTMLButtonElement, label: string | null): void {
  if (label === null) {
    button.disabled = false;
    const idle = button.dataset["idle"];
    if (idle !== undefined) button.textContent = idle;
  } else {
    button.dataset["idle"] ??= button.textContent ?? "";
    button.disabled = true;
    button.textContent = label;
  }
}
