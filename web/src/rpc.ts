// The generated clients over gRPC-Web on the page's own origin, each call
// carrying the signed-in user's token, and gRPC errors in words.
import { Code, ConnectError, createClient, type Client, type Interceptor } from "@connectrpc/connect";
import { createGrpcWebTransport } from "@connectrpc/connect-web";
import { BlindingService } from "./gen/equipoise/blinding/v1/blinding_pb";
import { RandomisationService } from "./gen/equipoise/randomisation/v1/randomisation_pb";
import { currentToken } from "./session";

const bearer: Interceptor = (next) => async (req) => {
  const token = currentToken();
  if (token !== null) {
    req.header.set("authorization", `Bearer ${token}`);
  }
  return next(req);
};

/** fetch, with a failure to reach the server reported as UNAVAILABLE. */
const reachingFetch: typeof globalThis.fetch = async (input, init) => {
  try {
    return await globalThis.fetch(input, init);
  } catch (cause) {
    if (init?.signal?.aborted) throw cause;
    throw new ConnectError("the server could not be reached", Code.Unavailable, undefined, undefined, cause);
  }
};

const transport = createGrpcWebTransport({
  baseUrl: window.location.origin,
  useBinaryFormat: true,
  interceptors: [bearer],
  fetch: reachingFetch,
});

export const blinding: Client<typeof BlindingService> = createClient(BlindingService, transport);
export const randomisation: Client<typeof RandomisationService> = createClient(RandomisationService, transport);

const CODE_NAMES: Record<number, string> = {
  [Code.Canceled]: "CANCELLED",
  [Code.Unknown]: "UNKNOWN",
  [Code.InvalidArgument]: "INVALID_ARGUMENT",
  [Code.DeadlineExceeded]: "DEADLINE_EXCEEDED",
  [Code.NotFound]: "NOT_FOUND",
  [Code.AlreadyExists]: "ALREADY_EXISTS",
  [Code.PermissionDenied]: "PERMISSION_DENIED",
  [Code.ResourceExhausted]: "RESOURCE_EXHAUSTED",
  [Code.FailedPrecondition]: "FAILED_PRECONDITION",
  [Code.Aborted]: "ABORTED",
  [Code.OutOfRange]: "OUT_OF_RANGE",
  [Code.Unimplemented]: "UNIMPLEMENTED",
  [Code.Internal]: "INTERNAL",
  [Code.Unavailable]: "UNAVAILABLE",
  [Code.DataLoss]: "DATA_LOSS",
  [Code.Unauthenticated]: "UNAUTHENTICATED",
};

export interface RpcProblem {
  code: Code;
  /** e.g. "NOT_FOUND". */
  name: string;
  /** The server's own message, written for users. */
  message: string;
  /** What the user can do about it. */
  hint: string;
}

const HINTS: Partial<Record<Code, string>> = {
  [Code.InvalidArgument]: "Correct the request and submit it again.",
  [Code.NotFound]: "Check the trial and the identifier.",
  [Code.PermissionDenied]: "Your roles do not allow this. Ask your trial administrator if you need access.",
  [Code.Unauthenticated]: "Sign in again and paste the new token.",
  [Code.Unavailable]: "The service is not answering. Check the connection and try again in a moment.",
  [Code.FailedPrecondition]: "The trial is not in a state that allows this.",
  [Code.DeadlineExceeded]: "The server took too long to answer. Try again.",
};

/** Any error of a call, as the user should read it. */
export function describe(error: unknown): RpcProblem {
  let e = ConnectError.from(error);
  // A stream cut off mid-way fails while reading the body: that is the
  // server (or the network) going away, not an unknown server error.
  if (e.code === Code.Unknown && (e.cause instanceof TypeError || /network|fetch|body stream/i.test(e.rawMessage))) {
    e = new ConnectError("the connection to the server was lost", Code.Unavailable);
  }
  return {
    code: e.code,
    name: CODE_NAMES[e.code] ?? `CODE_${e.code}`,
    message: e.rawMessage,
    hint: HINTS[e.code] ?? "",
  };
}

export function isAbort(error: unknown): boolean {
  return error instanceof ConnectError ? error.code === Code.Canceled : error instanceof DOMException && error.name === "AbortError";
}
