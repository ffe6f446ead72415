// Emergency unblinding: find the subject, give the reason, confirm the
// patient, reveal the arm to the requester. A refusal for a stale sign-in
// keeps the request in memory until the user has signed in again.
import { Code } from "@connectrpc/connect";
import { BlindingState, type ReasonCategory, type Reveal } from "./gen/equipoise/blinding/v1/blinding_pb";
import { blindingState, REASON_CATEGORIES, reasonCategory, revealKind } from "./labels";
import { blinding, describe, type RpcProblem } from "./rpc";
import { byId, busy, el, problemText, setError, setFacts, show } from "./dom";
import { currentClaims, signIn } from "./session";
import { utc } from "./time";

/** The server's bounds on the reason, after trimming. */
export const MIN_REASON_CHARS = 10;
export const MAX_REASON_CHARS = 2000;

interface Found {
  trialId: string;
  subjectId: string;
  siteId: string;
  code: string;
}

interface Pending extends Found {
  category: ReasonCategory;
  reason: string;
}

let found: Found | null = null;
let pending: Pending | null = null;

const findForm = () => byId<HTMLFormElement>("find-form");
const trialInput = () => byId<HTMLInputElement>("find-trial");
const subjectInput = () => byId<HTMLInputElement>("find-subject");
const categorySelect = () => byId<HTMLSelectElement>("reason-category");
const reasonText = () => byId<HTMLTextAreaElement>("reason-text");
const confirmCheck = () => byId<HTMLInputElement>("confirm-check");

/** Checks a reason as the server will; "" when it is acceptable. */
export function reasonProblem(reason: string): string {
  const length = [...reason.trim()].length;
  if (length === 0) return "Write the reason for unblinding.";
  if (length < MIN_REASON_CHARS) {
    return `The reason is too short: write at least ${MIN_REASON_CHARS} characters (now ${length}), so that the audit trail says why the blind was broken.`;
  }
  if (length > MAX_REASON_CHARS) {
    return `The reason is too long: at most ${MAX_REASON_CHARS} characters (now ${length}).`;
  }
  return "";
}

export function initDesk(): void {
  const select = categorySelect();
  for (const [value, label] of REASON_CATEGORIES) {
    const option = el("option", "", label);
    option.value = String(value);
    select.append(option);
  }
  byId("reason-min").textContent = String(MIN_REASON_CHARS);
  reasonText().addEventListener("input", updateCount);
  updateCount();

  findForm().addEventListener("submit", (event) => {
    event.preventDefault();
    void find();
  });
  byId<HTMLFormElement>("reason-form").addEventListener("submit", (event) => {
    event.preventDefault();
    review();
  });
  byId("confirm-back").addEventListener("click", back);
  byId("confirm-submit").addEventListener("click", () => void submit());
  byId<HTMLFormElement>("reauth-card").addEventListener("submit", (event) => {
    event.preventDefault();
    reauthenticate();
  });
  byId("reveal-clear").addEventListener("click", () => {
    clearReveal();
    resetDesk(false);
    trialInput().focus();
  });
}

function updateCount(): void {
  const length = [...reasonText().value.trim()].length;
  byId("reason-count").textContent = `${length} of at most ${MAX_REASON_CHARS}.`;
}

/** Back to an empty desk; `all` also forgets the trial typed. */
export function resetDesk(all: boolean): void {
  found = null;
  pending = null;
  clearReveal();
  if (all) trialInput().value = "";
  subjectInput().value = "";
  categorySelect().value = "";
  reasonText().value = "";
  confirmCheck().checked = false;
  updateCount();
  for (const id of ["find-error", "reason-error", "reason-category-error", "confirm-error", "reauth-error"]) {
    setError(byId(id), "");
  }
  show(byId("unblind-error"), false);
  show(findForm(), true);
  for (const id of ["subject-card", "reason-form", "confirm-card", "reauth-card"]) show(byId(id), false);
}

function clearReveal(): void {
  byId("reveal-arm").replaceChildren();
  byId("reveal-facts").replaceChildren();
  show(byId("reveal-card"), false);
}

async function find(): Promise<void> {
  const trialId = trialInput().value.trim();
  const subjectId = subjectInput().value.trim();
  const error = byId("find-error");
  clearReveal();
  show(byId("unblind-error"), false);
  for (const id of ["subject-card", "reason-form", "confirm-card", "reauth-card"]) show(byId(id), false);
  found = null;
  pending = null;
  if (trialId === "" || subjectId === "") {
    setError(error, trialId === "" ? "Enter the trial id, e.g. as printed on the subject's card." : "Enter the subject id.");
    (trialId === "" ? trialInput() : subjectInput()).focus();
    return;
  }
  setError(error, "");
  const button = findForm().querySelector("button[type=submit]") as HTMLButtonElement;
  busy(button, "Finding…");
  try {
    const subject = await blinding.getSubjectBlinding({ trialId, subjectId });
    found = { trialId: subject.trialId, subjectId: subject.subjectId, siteId: subject.siteId, code: subject.code };
    const earlier = subject.reveals.filter((r) => r.kind !== 0);
    const facts: Array<[string, string]> = [
      ["Trial", subject.trialId],
      ["Subject", subject.subjectId],
      ["Site", subject.siteId],
      ["Treatment code", subject.code === "" ? "pending" : subject.code],
      ["Blinding", blindingState(subject.state)],
      ["Continues in the trial", subject.continuesInTrial ? "yes" : "no"],
    ];
    if (earlier.length > 0) {
      facts.push([
        "Earlier reveals",
        earlier.map((r) => `${revealKind(r.kind)} ${utc(r.at)} by ${r.actor} (${r.role})`).join("; "),
      ]);
    }
    setFacts(byId("subject-facts"), facts);
    show(byId("subject-card"), true);
    show(byId("reason-form"), true);
    if (subject.state === BlindingState.UNBLINDED_EMERGENCY) {
      facts.push(["Note", "This subject was already unblinded in an emergency; a new request is audited again."]);
      setFacts(byId("subject-facts"), facts);
    }
    categorySelect().focus();
  } catch (e) {
    const problem = describe(e);
    setError(error, problemText(problem, findHint(problem)));
    subjectInput().focus();
  } finally {
    busy(button, null);
  }
}

function findHint(problem: RpcProblem): string {
  if (problem.code === Code.NotFound) {
    return "Check the trial and subject ids. You can only find subjects of the sites you work for.";
  }
  return problem.hint;
}

function review(): void {
  if (found === null) return;
  const categoryValue = categorySelect().value;
  const reason = reasonText().value;
  const categoryError = categoryValue === "" ? "Choose the reason category." : "";
  const reasonError = reasonProblem(reason);
  setError(byId("reason-category-error"), categoryError);
  setError(byId("reason-error"), reasonError);
  categorySelect().setAttribute("aria-invalid", String(categoryError !== ""));
  reasonText().setAttribute("aria-invalid", String(reasonError !== ""));
  if (categoryError !== "") {
    categorySelect().focus();
    return;
  }
  if (reasonError !== "") {
    reasonText().focus();
    return;
  }
  pending = { ...found, category: Number(categoryValue) as ReasonCategory, reason: reason.trim() };
  showConfirm("");
}

function showConfirm(note: string): void {
  if (pending === null) return;
  setFacts(byId("confirm-facts"), [
    ["Trial", pending.trialId],
    ["Subject", pending.subjectId],
    ["Site", pending.siteId],
    ["Treatment code", pending.code === "" ? "pending" : pending.code],
    ["Reason category", reasonCategory(pending.category)],
    ["Reason", pending.reason],
    ["Requested by", requester()],
  ]);
  setError(byId("confirm-error"), note);
  byId("confirm-error").classList.toggle("note", note !== "");
  show(findForm(), false);
  show(byId("subject-card"), false);
  show(byId("reason-form"), false);
  show(byId("reauth-card"), false);
  show(byId("confirm-card"), true);
  byId("h-confirm").focus();
}

function requester(): string {
  const claims = currentClaims();
  if (claims === null) return "not signed in";
  return `${claims.name} (${claims.sub}), ${claims.roles.join(", ")}`;
}

function back(): void {
  show(byId("confirm-card"), false);
  show(byId("unblind-error"), false);
  show(findForm(), true);
  show(byId("subject-card"), found !== null);
  show(byId("reason-form"), found !== null);
  reasonText().focus();
}

async function submit(): Promise<void> {
  if (pending === null) return;
  const error = byId("confirm-error");
  error.classList.remove("note");
  if (!confirmCheck().checked) {
    setError(error, "Tick the box to confirm that this is your patient.");
    confirmCheck().focus();
    return;
  }
  setError(error, "");
  show(byId("unblind-error"), false);
  const button = byId<HTMLButtonElement>("confirm-submit");
  busy(button, "Revealing…");
  const request = pending;
  try {
    const reveal = await blinding.emergencyUnblind({
      trialId: request.trialId,
      subjectIds: [request.subjectId],
      reasonCategory: request.category,
      reason: request.reason,
    });
    pending = null;
    showReveal(reveal);
  } catch (e) {
    const problem = describe(e);
    if (problem.code === Code.Unauthenticated) {
      askToSignInAgain(problem);
    } else {
      const card = byId("unblind-error");
      card.replaceChildren(
        el("h2", "", "Nothing was revealed"),
        el("p", "", problemText(problem, unblindHint(problem))),
      );
      show(card, true);
      card.focus();
    }
  } finally {
    busy(button, null);
  }
}

function unblindHint(problem: RpcProblem): string {
  switch (problem.code) {
    case Code.NotFound:
      return "Check the trial and subject ids. You can only unblind subjects of the sites you work for.";
    case Code.InvalidArgument:
      return "Change the request and submit it again.";
    case Code.PermissionDenied:
      return "Your roles do not allow emergency unblinding in this trial. Call the 24/7 unblinding desk.";
    case Code.Unavailable:
      return "No answer came back, so the arm is not shown. Submit the request again when the service is back, or call the 24/7 unblinding desk.";
    default:
      return problem.hint;
  }
}

function askToSignInAgain(problem: RpcProblem): void {
  byId("reauth-message").textContent = `${problem.name}: ${problem.message}.`;
  byId("reauth-kept").textContent =
    pending === null
      ? ""
      : `Your request to unblind subject ${pending.subjectId} (site ${pending.siteId}, trial ${pending.trialId}) is kept on this page.`;
  setError(byId("reauth-error"), "");
  byId<HTMLTextAreaElement>("reauth-token").value = "";
  show(byId("confirm-card"), false);
  show(byId("reauth-card"), true);
  byId("h-reauth").focus();
}

function reauthenticate(): void {
  const input = byId<HTMLTextAreaElement>("reauth-token");
  try {
    const claims = signIn(input.value);
    input.value = "";
    showConfirm(`Signed in again as ${claims.name}. Your request is unchanged: submit it again.`);
    byId("confirm-submit").focus();
  } catch (e) {
    setError(byId("reauth-error"), e instanceof Error ? e.message : String(e));
    input.focus();
  }
}

function showReveal(reveal: Reveal): void {
  show(byId("confirm-card"), false);
  show(byId("reauth-card"), false);
  const arm = byId("reveal-arm");
  arm.replaceChildren(el("span", "arm-label", reveal.armLabel), el("span", "arm-id", ` (arm ${reveal.armId})`));
  setFacts(byId("reveal-facts"), [
    ["Trial", reveal.trialId],
    ["Subject", reveal.subjectId],
    ["Site", reveal.siteId],
    ["Revealed at", utc(reveal.revealedAt)],
    ["Audit reference", `blinding audit record ${reveal.auditSeq.toString()}`],
    ["Blinding", blindingState(reveal.state)],
    ["Continues in the trial", reveal.continuesInTrial ? "yes" : "no"],
  ]);
  confirmCheck().checked = false;
  reasonText().value = "";
  categorySelect().value = "";
  updateCount();
  show(byId("reveal-card"), true);
  byId("h-reveal").focus();
}
