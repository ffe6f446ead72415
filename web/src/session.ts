// The signed-in user: the token lives in this module's variable and nowhere
// else (no storage, no cookie, no URL). Its payload is decoded for display
// and to choose the screens; the server verifies it on every call.

export interface Claims {
  sub: string;
  name: string;
  roles: string[];
  sites: string[];
  trials: string[];
  authTime: number | null;
  exp: number | null;
}

let token: string | null = null;
let claims: Claims | null = null;
const listeners: Array<(c: Claims | null) => void> = [];

export function currentToken(): string | null {
  return token;
}

export function currentClaims(): Claims | null {
  return claims;
}

export function onSessionChange(listener: (c: Claims | null) => void): void {
  listeners.push(listener);
}

/** Signs in with a pasted token; throws an Error with a message for the user. */
export function signIn(raw: string, now: Date = new Date()): Claims {
  const text = raw.trim().replace(/^Bearer\s+/i, "");
  if (text === "") {
    throw new Error("Paste a token first.");
  }
  const decoded = decode(text);
  if (decoded.exp !== null && decoded.exp * 1000 <= now.getTime()) {
    throw new Error(
      `This token expired at ${formatTime(decoded.exp)}. Sign in again with your identity provider and paste the new token.`,
    );
  }
  token = text;
  claims = decoded;
  for (const listener of listeners) listener(claims);
  return decoded;
}

export function signOut(): void {
  token = null;
  claims = null;
  for (const listener of listeners) listener(null);
}

export function hasAnyRole(c: Claims | null, roles: readonly string[]): boolean {
  return c !== null && c.roles.some((r) => roles.includes(r));
}

function decode(text: string): Claims {
  const parts = text.split(".");
  if (parts.length !== 3 || parts.some((p) => p === "")) {
    throw new Error("This is not a token: a token has three parts separated by dots (header.payload.signature).");
  }
  let payload: unknown;
  try {
    payload = JSON.parse(base64UrlDecode(parts[1] ?? ""));
  } catch {
    throw new Error("This token's payload cannot be read: paste the whole token, with nothing added.");
  }
  if (typeof payload !== "object" || payload === null) {
    throw new Error("This token's payload is not a JSON object.");
  }
  const p = payload as Record<string, unknown>;
  const sub = typeof p["sub"] === "string" ? p["sub"] : "";
  if (sub === "") {
    throw new Error("This token names no user (no \"sub\" claim).");
  }
  return {
    sub,
    name: typeof p["name"] === "string" && p["name"] !== "" ? p["name"] : sub,
    roles: strings(p["roles"]),
    sites: strings(p["sites"]),
    trials: strings(p["trials"]),
    authTime: typeof p["auth_time"] === "number" ? p["auth_time"] : null,
    exp: typeof p["exp"] === "number" ? p["exp"] : null,
  };
}

function strings(value: unknown): string[] {
  return Array.isArray(value) ? value.filter((v): v is string => typeof v === "string") : [];
}

function base64UrlDecode(part: string): string {
  const base64 = part.replace(/-/g, "+").replace(/_/g, "/");
  const padded = base64 + "=".repeat((4 - (base64.length % 4)) % 4);
  const binary = atob(padded);
  const bytes = Uint8Array.from(binary, (ch) => ch.charCodeAt(0));
  return new TextDecoder("utf-8", { fatal: true }).decode(bytes);
}

/** Seconds since the epoch as an ISO time in UTC, to the second. */
export function formatTime(seconds: number): string {
  return new Date(seconds * 1000).toISOString().replace(/\.\d{3}Z$/, "Z");
}
