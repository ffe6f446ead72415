// The unblinding desk, the notification feed and the trial console in a real
// headless Chromium against the real server: tokens minted by the CLI, the
// RESPINE example registered, activated and randomised over gRPC, then every
// screen driven as its user would.
import assert from "node:assert/strict";
import { copyFile, mkdir } from "node:fs/promises";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import {
  armsOf,
  launchBrowser,
  pageText,
  persisted,
  recordResponses,
  repoRoot,
  screenshot,
  screenshotsDir,
  Server,
} from "./harness.mjs";

const RESPINE = join(repoRoot, "services/shared/trial/examples/respine.yaml");
const WAIT = { timeout: 30_000 };
const PHONE = { viewport: { width: 360, height: 740 }, deviceScaleFactor: 1, isMobile: true, hasTouch: true };
const DESKTOP = { viewport: { width: 1100, height: 900 }, deviceScaleFactor: 1 };

const ELIGIBLE = [
  "--covariate", "age_years=45",
  "--covariate", "lbp_months=12",
  "--covariate", "ddd_on_mri=true",
  "--covariate", "conservative_care_failed=true",
];

let server;
let browser;
let arms;
const tokens = {};
const shots = {};

async function signIn(page, token) {
  await page.getByRole("button", { name: "Sign in", exact: true }).first().click();
  await page.getByLabel("Token", { exact: true }).fill(token);
  await page.locator("#signin-form button[type=submit]").click();
  await page.locator("#sign-out").waitFor({ state: "visible", ...WAIT });
}

/** A page whose script errors fail loudly in the test's output. */
async function newPage(context) {
  const page = await context.newPage();
  page.on("pageerror", (error) => console.error(`page error: ${error.message}`));
  return page;
}

async function openPage(context, token) {
  const page = await newPage(context);
  await page.goto(`${server.url}/`);
  await signIn(page, token);
  return page;
}

async function findSubject(page, trial, subject) {
  await page.getByRole("button", { name: "Emergency unblinding" }).click();
  await page.locator("#find-trial").fill(trial);
  await page.getByLabel("Subject", { exact: true }).fill(subject);
  await page.getByRole("button", { name: "Find subject" }).click();
}

async function writeReason(page, category, reason) {
  await page.getByLabel("Reason category").selectOption({ label: category });
  await page.getByLabel("Reason", { exact: true }).fill(reason);
  await page.getByRole("button", { name: "Review the request" }).click();
}

async function confirmAndReveal(page) {
  await page.locator("#confirm-card").waitFor({ state: "visible", ...WAIT });
  await page.getByLabel("This is my patient: trial, subject and site are right.").check();
  await page.getByRole("button", { name: "Reveal the arm" }).click();
}

/** Fails naming where an arm id or label turned up. */
function assertNoArm(where, text) {
  for (const { id, label } of arms) {
    assert.ok(!new RegExp(`\\b${id}\\b`).test(text), `${where} holds the arm id ${id}`);
    assert.ok(!text.toLowerCase().includes(label.toLowerCase()), `${where} holds the arm label "${label}"`);
  }
}

async function assertNothingPersisted(page, secrets) {
  const kept = await persisted(page);
  assert.equal(kept.localStorage, "", "localStorage is empty");
  assert.equal(kept.sessionStorage, "", "sessionStorage is empty");
  assert.equal(kept.cookie, "", "no cookie");
  assert.equal(kept.contextCookies, "", "no cookie in the browser context");
  assert.equal(kept.indexedDB, "", "no IndexedDB database");
  assert.equal(kept.url, `${server.url}/`, "the URL never changes");
  const all = Object.values(kept).join("\n");
  for (const secret of secrets) assert.ok(!all.includes(secret), "no token is kept anywhere");
  assertNoArm("the URL or storage", all);
}

async function preparerArm(subject) {
  const allocation = await server.client(tokens.site, ["allocation", "RESPINE", subject]);
  const code = /^treatment_code:\s+(\S+)/m.exec(allocation)?.[1];
  assert.ok(code, `a treatment code for ${subject}`);
  const prepared = await server.client(tokens.preparer, ["prepare", "--trial", "RESPINE", "--code", code]);
  const arm = arms.find(({ id }) => new RegExp(`\\(arm ${id}\\)`).test(prepared));
  assert.ok(arm, `the preparer's instruction names an arm: ${prepared}`);
  return arm;
}

describe("the page, in Chromium, against the real server", { timeout: 600_000 }, () => {
  before(async () => {
    arms = await armsOf(RESPINE);
    assert.ok(arms.length === 2, "RESPINE's two arms are read from its definition");
    server = await Server.start();
    tokens.admin = await server.mint({ sub: "ada", name: "Ada Admin", roles: ["trial_admin", "statistician"] });
    tokens.site = await server.mint({ sub: "sam", name: "Sam Investigator", roles: ["site_investigator"], sites: ["FR-MTP"] });
    tokens.sitePar = await server.mint({ sub: "pat", roles: ["site_investigator"], sites: ["FR-PAR"] });
    tokens.sponsor = await server.mint({ sub: "spo", name: "Sponsor Monitor", roles: ["trial_admin"] });
    tokens.preparer = await server.mint({ sub: "pia", roles: ["unblinded_preparer"], sites: ["FR-MTP"] });
    await server.client(tokens.admin, ["register", RESPINE]);
    await server.client(tokens.admin, ["activate", "RESPINE"]);
    const subjects = [
      ["FR-MTP", "MTP-001", "72.5", tokens.site],
      ["FR-MTP", "MTP-002", "55", tokens.site],
      ["FR-MTP", "MTP-003", "80", tokens.site],
      ["FR-MTP", "MTP-004", "62", tokens.site],
      ["FR-PAR", "PAR-001", "75", tokens.sitePar],
    ];
    for (const [site, subject, vas, token] of subjects) {
      await server.client(token, [
        "randomise", "--trial", "RESPINE", "--site", site, "--subject", subject, ...ELIGIBLE, "--covariate", `vas_mm=${vas}`,
      ]);
    }
    browser = await launchBrowser();
  });

  after(async () => {
    await browser?.close();
    await server?.stop();
    if (process.env.UPDATE_SCREENSHOTS === "1") {
      await mkdir(screenshotsDir, { recursive: true });
      for (const [name, path] of Object.entries(shots)) await copyFile(path, join(screenshotsDir, `${name}.png`));
    }
  });

  test("a site investigator unblinds their patient on a phone; the sponsor's live feed shows it without the arm", async () => {
    const sponsorContext = await browser.newContext(DESKTOP);
    const sponsor = await newPage(sponsorContext);
    const sponsorNetwork = await recordResponses(sponsor);
    await sponsor.goto(`${server.url}/`);
    await screenshot(sponsor, "01-sign-in");
    await signIn(sponsor, tokens.sponsor);
    await sponsor.getByRole("button", { name: "Notifications" }).click();
    await sponsor.locator("#feed-trial").fill("RESPINE");
    await sponsor.getByRole("button", { name: "Watch", exact: true }).click();
    await sponsor.getByText("Watching RESPINE, live", { exact: false }).waitFor(WAIT);

    const deskContext = await browser.newContext(PHONE);
    const desk = await newPage(deskContext);
    const deskNetwork = await recordResponses(desk);
    await desk.goto(`${server.url}/`);
    await signIn(desk, tokens.site);
    await screenshot(desk, "02-signed-in-phone");
    assert.match(await desk.locator("#session-claims").textContent(), /sam.*site_investigator.*FR-MTP/);

    await findSubject(desk, "RESPINE", "MTP-001");
    const facts = desk.locator("#subject-facts");
    await facts.waitFor({ state: "visible", ...WAIT });
    const subjectText = await facts.innerText();
    assert.match(subjectText, /MTP-001/);
    assert.match(subjectText, /FR-MTP/);
    assert.match(subjectText, /Blinded/);
    assertNoArm("the subject card", await pageText(desk));
    await writeReason(desk, "Serious adverse event", "Anaphylaxis after injection, admitted to ICU");
    await desk.locator("#confirm-card").waitFor({ state: "visible", ...WAIT });
    const confirm = await desk.locator("#confirm-facts").innerText();
    for (const expected of ["RESPINE", "MTP-001", "FR-MTP", "Serious adverse event", "Anaphylaxis"]) {
      assert.ok(confirm.includes(expected), `the confirmation repeats ${expected}`);
    }
    await screenshot(desk, "03-desk-confirm-phone");
    await confirmAndReveal(desk);
    await desk.locator("#reveal-card").waitFor({ state: "visible", ...WAIT });
    shots["desk-phone"] = await screenshot(desk, "04-desk-revealed-phone");

    const expected = await preparerArm("MTP-001");
    const armShown = await desk.locator("#reveal-arm").innerText();
    assert.ok(armShown.includes(expected.label), `the requester sees the arm label ${expected.label}: ${armShown}`);
    assert.ok(armShown.includes(expected.id), "and the arm id");
    const revealFacts = await desk.locator("#reveal-facts").innerText();
    assert.match(revealFacts, /Revealed at\s+\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC/);
    assert.match(revealFacts, /Audit reference\s+blinding audit record \d+/);
    const overflow = await desk.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
    assert.ok(overflow <= 0, `nothing is wider than a 360 px phone screen (overflow ${overflow} px)`);
    assert.ok(
      deskNetwork.all().some(({ body }) => body.includes(expected.label)),
      "the response capture works: the requester's own answer carried the arm",
    );

    // The sponsor: the notification arrives live, and no arm anywhere.
    const item = sponsor.locator("#feed-list li", { hasText: "MTP-001" });
    await item.waitFor(WAIT);
    const line = await item.innerText();
    assert.match(line, /Emergency unblinding/);
    assert.match(line, /FR-MTP/);
    assert.match(line, /by sam \(site_investigator\)/);
    assert.match(line, /Serious adverse event/);
    shots.feed = await screenshot(sponsor, "05-feed");
    assertNoArm("the sponsor's page", await pageText(sponsor));
    const received = sponsorNetwork.all();
    assert.ok(
      received.some(({ url, body }) => url.includes("WatchUnblindings") && body.includes("MTP-001")),
      "the response capture saw the notification in the watch stream",
    );
    for (const { url, body } of received) assertNoArm(`the sponsor's response from ${url}`, body.toString("latin1"));
    await assertNothingPersisted(sponsor, [tokens.sponsor]);
    await assertNothingPersisted(desk, [tokens.site]);

    // Clearing the arm takes it off the requester's screen too.
    await desk.getByRole("button", { name: "Clear the arm from the screen" }).click();
    assertNoArm("the requester's page after clearing", await pageText(desk));
    await deskContext.close();
    await sponsorContext.close();
  });

  test("a reason that is too short is refused on the page and nothing is revealed", async () => {
    const context = await browser.newContext(DESKTOP);
    const page = await openPage(context, tokens.site);
    const unblindCalls = [];
    page.on("request", (r) => r.url().includes("EmergencyUnblind") && unblindCalls.push(r.url()));
    await findSubject(page, "RESPINE", "MTP-003");
    await page.locator("#reason-form").waitFor({ state: "visible", ...WAIT });
    await writeReason(page, "Pregnancy", "   help    ");
    const message = page.locator("#reason-error");
    await message.waitFor({ state: "visible", ...WAIT });
    assert.match(await message.innerText(), /too short: write at least 10 characters \(now 4\)/);
    assert.equal(await page.getByLabel("Reason", { exact: true }).getAttribute("aria-invalid"), "true");
    assert.equal(await page.locator("#confirm-card").isVisible(), false, "no confirmation step");
    await page.getByLabel("Reason category").selectOption({ label: "Choose a category" });
    await page.getByLabel("Reason", { exact: true }).fill("");
    await page.getByRole("button", { name: "Review the request" }).click();
    assert.match(await page.locator("#reason-category-error").innerText(), /Choose the reason category/);
    await screenshot(page, "06-desk-short-reason");
    assert.deepEqual(unblindCalls, [], "no unblinding request was sent");
    assertNoArm("the page", await pageText(page));
    await context.close();
  });

  test("another site's subject reads exactly like a subject that does not exist", async () => {
    const context = await browser.newContext(DESKTOP);
    const page = await openPage(context, tokens.site);
    const error = page.locator("#find-error");
    await findSubject(page, "RESPINE", "PAR-001");
    await error.waitFor({ state: "visible", ...WAIT });
    const otherSite = await error.innerText();
    await screenshot(page, "07-desk-other-site");
    await findSubject(page, "RESPINE", "XXX-999");
    await page.getByText("XXX-999", { exact: false }).first().waitFor(WAIT);
    const unknown = await error.innerText();
    assert.match(otherSite, /^NOT_FOUND: /);
    assert.equal(otherSite.replaceAll("PAR-001", "<subject>"), unknown.replaceAll("XXX-999", "<subject>"));
    assert.ok(!otherSite.includes("FR-PAR"), "the other site is not named");
    assert.equal(await page.locator("#reason-form").isVisible(), false, "no way on to a reason");
    assertNoArm("the page", await pageText(page));
    await context.close();
  });

  test("a stale sign-in is asked to sign in again, and the kept request then completes", async () => {
    const context = await browser.newContext(DESKTOP);
    const longAgo = Math.floor(Date.now() / 1000) - 3 * 3600;
    const stale = await server.resign(tokens.site, { auth_time: longAgo, iat: longAgo });
    const page = await openPage(context, stale);
    assert.match(await page.locator("#session-claims").textContent(), /3 h ago/);
    await findSubject(page, "RESPINE", "MTP-002");
    await page.locator("#reason-form").waitFor({ state: "visible", ...WAIT });
    await writeReason(page, "Overdose or medication error", "Double dose given by mistake at 02:40");
    await confirmAndReveal(page);
    const prompt = page.locator("#reauth-card");
    await prompt.waitFor({ state: "visible", ...WAIT });
    assert.match(await page.locator("#reauth-message").innerText(), /^UNAUTHENTICATED: re-authentication is needed/);
    assert.match(await page.locator("#reauth-kept").innerText(), /subject MTP-002 \(site FR-MTP, trial RESPINE\) is kept/);
    assert.equal(await page.locator("#reveal-card").isVisible(), false);
    assertNoArm("the page after the refusal", await pageText(page));
    await screenshot(page, "08-desk-sign-in-again");

    const fresh = await server.mint({ sub: "sam", name: "Sam Investigator", roles: ["site_investigator"], sites: ["FR-MTP"] });
    await page.getByLabel("New token").fill(fresh);
    await page.getByRole("button", { name: "Sign in again" }).click();
    await page.locator("#confirm-card").waitFor({ state: "visible", ...WAIT });
    assert.match(await page.locator("#confirm-error").innerText(), /Signed in again as Sam Investigator/);
    const kept = await page.locator("#confirm-facts").innerText();
    assert.match(kept, /MTP-002/);
    assert.match(kept, /Double dose given by mistake at 02:40/, "the reason was kept, not retyped");
    await page.getByRole("button", { name: "Reveal the arm" }).click();
    await page.locator("#reveal-card").waitFor({ state: "visible", ...WAIT });
    const expected = await preparerArm("MTP-002");
    assert.ok((await page.locator("#reveal-arm").innerText()).includes(expected.label));
    await assertNothingPersisted(page, [stale, fresh]);
    await context.close();
  });

  test("the console shows recruitment, warnings and simulated operating characteristics as SVG", async () => {
    const context = await browser.newContext(DESKTOP);
    const page = await openPage(context, tokens.admin);
    await page.getByRole("button", { name: "Trial console" }).click();
    await page.locator("#console-trial").fill("RESPINE");
    await page.getByRole("button", { name: "Load status" }).click();
    await page.locator("#status-out").waitFor({ state: "visible", ...WAIT });
    const sites = await page.locator("#sites-table").innerText();
    assert.match(sites, /FR-MTP\s+4\s+40/);
    assert.match(sites, /FR-PAR\s+1\s+30/);
    assert.match(await page.locator("#strata-table").innerText(), /site=FR-MTP, baseline_pain=severe\s+2/);
    assert.match(await page.locator("#status-facts").innerText(), /Randomised\s+5 of 114/);
    assert.match(await page.locator("#list-warnings").innerText(), /No allocation list is running low/);
    assert.match(await page.locator("#pool-facts").innerText(), /Pool level\s+Sufficient[\s\S]*Codes assigned\s+5[\s\S]*Emergency unblindings\s+2/);

    await page.getByLabel("Simulated trials").fill("20");
    await page.getByLabel("Seed").fill("20261201");
    await page.getByRole("button", { name: "Simulate", exact: true }).click();
    await page.locator("#sim-out").waitFor({ state: "visible", timeout: 120_000 });
    const guess = page.locator("#chart-guess svg");
    assert.equal(await guess.locator("rect.bar").count(), 3, "three history scopes");
    const rates = await guess.locator("text.value").allTextContents();
    assert.equal(rates.length, 3);
    for (const rate of rates) assert.match(rate, /^\d+\.\d%$/);
    const imbalance = page.locator("#chart-imbalance svg");
    const rows = await imbalance.locator("g.imbalance-row").count();
    assert.ok(rows >= 1 + 7 + 10, `one row per overall/factor level/stratum, got ${rows}`);
    assert.equal(await imbalance.locator("g.scope-overall").count(), 1);
    const widths = await imbalance.locator("rect.max-worst").evaluateAll((rects) => rects.map((r) => Number(r.getAttribute("width"))));
    assert.ok(widths.some((w) => w > 0), "the worst imbalance is drawn from the report's numbers");
    assert.match(await page.locator("#sim-facts").innerText(), /Simulated trials\s+20\s+Subjects per trial\s+114[\s\S]*Seed\s+20261201/);
    const inlineStyles = await page.evaluate(() => document.querySelectorAll("[style]").length);
    assert.equal(inlineStyles, 0, "no inline style anywhere (the CSP forbids them)");
    shots.console = await screenshot(page, "09-console");
    await context.close();
  });

  test("controls are labelled and keyboard focus is visible", async () => {
    const context = await browser.newContext(DESKTOP);
    const page = await newPage(context);
    await page.goto(`${server.url}/`);
    const unlabelled = await page.evaluate(() =>
      [...document.querySelectorAll("input, select, textarea")]
        .filter((e) => e.labels === null || e.labels.length === 0)
        .filter((e) => !e.getAttribute("aria-label"))
        .map((e) => e.id),
    );
    assert.deepEqual(unlabelled, [], "every control has a label");
    // Keyboard only: Tab to the token, type it, Tab to the button, Enter.
    await page.keyboard.press("Tab");
    let focused = "";
    for (let i = 0; i < 10 && focused !== "token"; i++) {
      await page.keyboard.press("Tab");
      focused = await page.evaluate(() => document.activeElement?.id ?? "");
    }
    assert.equal(focused, "token", "the token field is reached with Tab");
    await page.keyboard.insertText(tokens.admin);
    await page.keyboard.press("Tab");
    const outline = await page.evaluate(() => {
      const style = getComputedStyle(document.activeElement);
      return { tag: document.activeElement.tagName, style: style.outlineStyle, width: style.outlineWidth };
    });
    assert.equal(outline.tag, "BUTTON");
    assert.notEqual(outline.style, "none", "the focused button has a visible outline");
    assert.notEqual(outline.width, "0px");
    await page.keyboard.press("Enter");
    await page.locator("#sign-out").waitFor({ state: "visible", ...WAIT });
    assert.match(await page.locator("#who").innerText(), /Ada Admin/);
    await context.close();
  });

  test("a server that goes away mid-request shows a clear message and reveals nothing", async () => {
    const sponsorContext = await browser.newContext(DESKTOP);
    const sponsor = await openPage(sponsorContext, tokens.sponsor);
    await sponsor.getByRole("button", { name: "Notifications" }).click();
    await sponsor.locator("#feed-trial").fill("RESPINE");
    await sponsor.getByRole("button", { name: "Watch", exact: true }).click();
    await sponsor.getByText("Watching RESPINE, live", { exact: false }).waitFor(WAIT);

    const context = await browser.newContext(DESKTOP);
    const page = await openPage(context, tokens.site);
    await findSubject(page, "RESPINE", "MTP-004");
    await page.locator("#reason-form").waitFor({ state: "visible", ...WAIT });
    await writeReason(page, "Other medical emergency", "Unexplained collapse in the emergency room");
    await page.locator("#confirm-card").waitFor({ state: "visible", ...WAIT });
    await page.getByLabel("This is my patient: trial, subject and site are right.").check();

    await server.kill();
    await page.getByRole("button", { name: "Reveal the arm" }).click();
    const error = page.locator("#unblind-error");
    await error.waitFor({ state: "visible", ...WAIT });
    const text = await error.innerText();
    assert.match(text, /Nothing was revealed/);
    assert.match(text, /UNAVAILABLE: /);
    assert.match(text, /the arm is not shown/);
    assert.equal(await page.locator("#reveal-card").isVisible(), false);
    assertNoArm("the page", await pageText(page));
    shots["desk-server-gone"] = await screenshot(page, "10-desk-server-gone");

    const lost = sponsor.locator("#feed-error");
    await lost.waitFor({ state: "visible", ...WAIT });
    assert.match(await lost.innerText(), /Connection to the server lost/);
    await screenshot(sponsor, "11-feed-server-gone");
    await context.close();
    await sponsorContext.close();
  });
});
