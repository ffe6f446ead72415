// The page: sign in, then the screens the token's roles are for. Nothing is
// kept outside this page's memory, and the URL never changes.
import { initConsole, resetConsole } from "./console";
import { initDesk, resetDesk } from "./desk";
import { byId, setError, setFacts, show } from "./dom";
import { initFeed, stopFeed } from "./feed";
import { currentClaims, formatTime, hasAnyRole, onSessionChange, signIn, signOut, type Claims } from "./session";
import { secondsAgo } from "./time";

type Screen = "signin" | "desk" | "feed" | "console";

/** Who each screen is for; the server decides in the end. */
const SCREEN_ROLES: Record<Exclude<Screen, "signin">, readonly string[]> = {
  desk: ["site_investigator", "emergency_desk", "medical_monitor"],
  feed: [
    "trial_admin",
    "medical_monitor",
    "emergency_desk",
    "safety_officer",
    "statistician",
    "site_investigator",
    "site_coordinator",
  ],
  console: ["trial_admin", "statistician"],
};

function tabs(): HTMLButtonElement[] {
  return Array.from(document.querySelectorAll<HTMLButtonElement>("button.tab"));
}

function go(screen: Screen): void {
  for (const tab of tabs()) {
    const mine = tab.dataset["screen"] === screen;
    if (mine) tab.setAttribute("aria-current", "page");
    else tab.removeAttribute("aria-current");
    show(byId(`screen-${tab.dataset["screen"] ?? ""}`), mine);
  }
  const heading = byId(`h-${screen}`);
  heading.setAttribute("tabindex", "-1");
  heading.focus();
}

function screensFor(claims: Claims | null): Screen[] {
  if (claims === null) return ["signin"];
  const allowed = (Object.keys(SCREEN_ROLES) as Array<keyof typeof SCREEN_ROLES>).filter((s) =>
    hasAnyRole(claims, SCREEN_ROLES[s]),
  );
  // Roles this page does not know: offer everything and let the server say.
  return ["signin", ...(allowed.length > 0 ? allowed : (Object.keys(SCREEN_ROLES) as Screen[]))];
}

function renderSession(claims: Claims | null): void {
  const who = byId("who");
  const open = screensFor(claims);
  for (const tab of tabs()) {
    show(tab.parentElement as HTMLElement, open.includes(tab.dataset["screen"] as Screen));
  }
  show(byId("sign-out"), claims !== null);
  if (claims === null) {
    who.textContent = "Not signed in";
    show(byId("session"), false);
    return;
  }
  who.textContent = `${claims.name} · ${claims.roles.join(", ") || "no role"}${
    claims.sites.length > 0 ? ` · ${claims.sites.join(", ")}` : ""
  }`;
  setFacts(byId("session-claims"), [
    ["User", claims.sub],
    ["Name", claims.name],
    ["Roles", claims.roles.join(", ") || "none"],
    ["Sites", claims.sites.join(", ") || "none (sponsor)"],
    ["Trials", claims.trials.join(", ") || "none"],
    ["Signed in (auth_time)", claims.authTime === null ? "not stated" : secondsAgo(claims.authTime)],
    ["Token expires", claims.exp === null ? "not stated" : formatTime(claims.exp)],
  ]);
  show(byId("session"), true);
  // One trial in the token: fill it in where a trial is asked for.
  const trials = claims.trials.filter((t) => t !== "*");
  if (trials.length === 1) {
    for (const id of ["find-trial", "feed-trial", "console-trial"]) {
      const input = byId<HTMLInputElement>(id);
      if (input.value === "") input.value = trials[0] ?? "";
    }
  }
}

function init(): void {
  initDesk();
  initFeed();
  initConsole();
  onSessionChange(renderSession);
  renderSession(currentClaims());

  for (const tab of tabs()) {
    tab.addEventListener("click", () => go(tab.dataset["screen"] as Screen));
  }
  byId<HTMLFormElement>("signin-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const input = byId<HTMLTextAreaElement>("token");
    const error = byId("token-error");
    try {
      const previous = currentClaims();
      const claims = signIn(input.value);
      input.value = "";
      input.removeAttribute("aria-invalid");
      setError(error, "");
      if (previous !== null && previous.sub !== claims.sub) {
        // Another user: nothing of the previous one's stays on screen.
        resetDesk(false);
        stopFeed(true);
        resetConsole();
      }
      const next = screensFor(claims)[1];
      if (next !== undefined) go(next);
    } catch (e) {
      input.setAttribute("aria-invalid", "true");
      setError(error, e instanceof Error ? e.message : String(e));
      input.focus();
    }
  });
  byId("sign-out").addEventListener("click", () => {
    signOut();
    resetDesk(true);
    stopFeed(true);
    resetConsole();
    go("signin");
  });
}

if (document.readyState === "loading") {
  document.addEventListener("DOMContentLoaded", init);
} else {
  init();
}
