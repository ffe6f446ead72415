// The live feed of unblinding notifications (WatchUnblindings). A
// notification carries no arm, and nothing here adds one. A broken stream
// resumes after the last cursor received, so nothing is missed or repeated.
import type { UnblindingNotification } from "./gen/equipoise/blinding/v1/blinding_pb";
import { reasonCategory, revealKind } from "./labels";
import { blinding, describe, isAbort } from "./rpc";
import { byId, el, problemText, setError, show } from "./dom";
import { utc } from "./time";
import { Code } from "@connectrpc/connect";

const RETRY_SECONDS = [2, 5, 10, 30];

let controller: AbortController | null = null;
let trial = "";
let cursor = 0n;
let count = 0;
let retryTimer: number | null = null;
let failures = 0;

export function initFeed(): void {
  byId<HTMLFormElement>("feed-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const trialId = byId<HTMLInputElement>("feed-trial").value.trim();
    if (trialId === "") {
      setError(byId("feed-error"), "Enter the trial id to watch.");
      byId("feed-trial").focus();
      return;
    }
    start(trialId);
  });
  byId("feed-stop").addEventListener("click", () => {
    stopFeed();
    status("Stopped. Press Watch to resume where the feed left off.");
  });
}

/** Stops watching; `forget` also clears what was shown (sign-out). */
export function stopFeed(forget = false): void {
  controller?.abort();
  controller = null;
  if (retryTimer !== null) {
    window.clearTimeout(retryTimer);
    retryTimer = null;
  }
  byId<HTMLButtonElement>("feed-stop").disabled = true;
  byId<HTMLButtonElement>("feed-start").disabled = false;
  if (forget) {
    trial = "";
    cursor = 0n;
    count = 0;
    byId("feed-list").replaceChildren();
    byId("feed-count").textContent = "";
    show(byId("feed-empty"), true);
    setError(byId("feed-error"), "");
    status("");
  }
}

function start(trialId: string): void {
  stopFeed();
  if (trialId !== trial) {
    stopFeed(true);
    trial = trialId;
  }
  failures = 0;
  void watch();
}

function status(text: string): void {
  byId("feed-status").textContent = text;
}

async function watch(): Promise<void> {
  const mine = new AbortController();
  controller = mine;
  byId<HTMLButtonElement>("feed-stop").disabled = false;
  byId<HTMLButtonElement>("feed-start").disabled = true;
  setError(byId("feed-error"), "");
  status(`Connecting to the ${trial} feed…`);
  try {
    const stream = blinding.watchUnblindings(
      { trialId: trial, afterCursor: cursor },
      {
        signal: mine.signal,
        onHeader: () => {
          if (controller !== mine) return;
          failures = 0;
          setError(byId("feed-error"), "");
          status(watchingText());
        },
      },
    );
    for await (const notification of stream) {
      append(notification);
    }
    // The server ended the stream (it is shutting down): resume.
    if (controller === mine) retry("the server closed the feed");
  } catch (e) {
    if (controller !== mine || isAbort(e)) return;
    const problem = describe(e);
    if (problem.code === Code.Unavailable || problem.code === Code.Unknown || problem.code === Code.Internal) {
      retry(problemText(problem, ""));
    } else {
      stopFeed();
      setError(byId("feed-error"), problemText(problem));
      status("");
    }
  }
}

function retry(reason: string): void {
  const delay = RETRY_SECONDS[Math.min(failures, RETRY_SECONDS.length - 1)] ?? 30;
  failures += 1;
  setError(
    byId("feed-error"),
    `Connection to the server lost (${reason}). Notifications received so far stay listed; retrying in ${delay} s.`,
  );
  status("Reconnecting…");
  retryTimer = window.setTimeout(() => {
    retryTimer = null;
    if (controller !== null) void watch();
  }, delay * 1000);
}

function append(n: UnblindingNotification): void {
  if (n.cursor <= cursor && cursor !== 0n) return;
  cursor = n.cursor;
  count += 1;
  const item = el("li", "notification");
  item.dataset["cursor"] = n.cursor.toString();
  const head = el("p", "feed-head");
  head.append(el("strong", "", revealKind(n.kind)), ` · subject ${n.subjectId} at site ${n.siteId}`);
  const details = [utc(n.at), `by ${n.actor} (${n.role})`];
  if (n.reasonCategory !== 0) details.push(`reason: ${reasonCategory(n.reasonCategory)}`);
  details.push(`trial ${n.trialId}`, `#${n.cursor.toString()}`);
  item.append(head, el("p", "feed-details", details.join(" · ")));
  byId("feed-list").prepend(item);
  byId("feed-count").textContent = `(${count})`;
  show(byId("feed-empty"), false);
  status(watchingText());
}

function watchingText(): string {
  return `Watching ${trial}, live: ${count} notification${count === 1 ? "" : "s"}, newest first.`;
}
