// The trial console: recruitment by site and stratum, list and code-pool
// warnings, and a design's simulated operating characteristics as charts.
import type { BlindingStatus } from "./gen/equipoise/blinding/v1/blinding_pb";
import type { SimulationReport, TrialStatus } from "./gen/equipoise/randomisation/v1/randomisation_pb";
import { guessChart, imbalanceChart } from "./charts";
import { byId, busy, el, problemText, setError, setFacts, show } from "./dom";
import { poolLevel, trialState } from "./labels";
import { blinding, describe, randomisation } from "./rpc";

export function initConsole(): void {
  byId<HTMLFormElement>("status-form").addEventListener("submit", (event) => {
    event.preventDefault();
    void loadStatus();
  });
  byId<HTMLFormElement>("sim-form").addEventListener("submit", (event) => {
    event.preventDefault();
    void simulate();
  });
}

export function resetConsole(): void {
  show(byId("status-out"), false);
  show(byId("sim-out"), false);
  byId("chart-guess").replaceChildren();
  byId("chart-imbalance").replaceChildren();
  for (const id of ["status-error", "sim-error", "blinding-error"]) setError(byId(id), "");
  byId("sim-status").textContent = "";
}

function trialId(): string {
  return byId<HTMLInputElement>("console-trial").value.trim();
}

async function loadStatus(): Promise<void> {
  const id = trialId();
  const error = byId("status-error");
  if (id === "") {
    setError(error, "Enter the trial id.");
    byId("console-trial").focus();
    return;
  }
  setError(error, "");
  const button = byId<HTMLFormElement>("status-form").querySelector("button[type=submit]") as HTMLButtonElement;
  busy(button, "Loading…");
  const [status, pools] = await Promise.allSettled([
    randomisation.getTrialStatus({ trialId: id }),
    blinding.getBlindingStatus({ trialId: id }),
  ]);
  busy(button, null);
  if (status.status === "rejected") {
    show(byId("status-out"), false);
    setError(error, problemText(describe(status.reason)));
    return;
  }
  renderStatus(status.value);
  if (pools.status === "fulfilled") {
    setError(byId("blinding-error"), "");
    renderPools(pools.value);
  } else {
    byId("pool-facts").replaceChildren();
    setError(byId("blinding-error"), problemText(describe(pools.reason)));
  }
  show(byId("status-out"), true);
}

function renderStatus(s: TrialStatus): void {
  setFacts(byId("status-facts"), [
    ["Trial", `${s.trialId}, version ${s.version}`],
    ["State", trialState(s.state)],
    ["Randomised", s.totalCap > 0 ? `${s.randomised} of ${s.totalCap}` : String(s.randomised)],
    ["Randomised in error", String(s.randomisedInError)],
  ]);
  const sites = byId("sites-table").querySelector("tbody") as HTMLTableSectionElement;
  sites.replaceChildren(
    ...s.sites.map((site) => {
      const row = el("tr");
      const meter = el("meter");
      meter.min = 0;
      meter.max = site.cap > 0 ? site.cap : Math.max(1, site.randomised);
      meter.value = site.randomised;
      meter.setAttribute("aria-label", `${site.siteId}: ${site.randomised} of ${site.cap > 0 ? site.cap : "no cap"}`);
      const filled = el("td");
      filled.append(meter);
      row.append(
        th(site.siteId),
        el("td", "num", String(site.randomised)),
        el("td", "num", site.cap > 0 ? String(site.cap) : "none"),
        filled,
      );
      return row;
    }),
  );
  const strata = byId("strata-table").querySelector("tbody") as HTMLTableSectionElement;
  strata.replaceChildren(
    ...(s.strata.length === 0
      ? [emptyRow(3, "No subject randomised yet.")]
      : s.strata.map((stratum) => {
          const row = el("tr");
          row.append(
            th(stratum.stratum.replaceAll(",", ", ")),
            el("td", "num", String(stratum.randomised)),
            el("td", "num", stratum.cap > 0 ? String(stratum.cap) : "none"),
          );
          return row;
        })),
  );
  const warnings = byId("list-warnings");
  warnings.replaceChildren(
    ...(s.listWarnings.length === 0
      ? [el("li", "ok", "No allocation list is running low.")]
      : s.listWarnings.map((w) => el("li", "warn", `Stratum ${w.stratum}: ${w.remaining} allocations left on the uploaded list.`))),
  );
}

function th(text: string): HTMLTableCellElement {
  const cell = el("th", "", text);
  cell.scope = "row";
  return cell;
}

function emptyRow(columns: number, text: string): HTMLTableRowElement {
  const row = el("tr");
  const cell = el("td", "empty", text);
  cell.colSpan = columns;
  row.append(cell);
  return row;
}

function renderPools(b: BlindingStatus): void {
  const [level, cls] = poolLevel(b.poolLevel);
  const levelText = el("span", `level ${cls}`, b.poolsStored ? level : "No pool yet: no code issued");
  setFacts(byId("pool-facts"), [
    ["Pool level", levelText],
    ["Codes assigned", String(b.codesAssigned)],
    ["Emergency unblindings", String(b.emergencyUnblindings)],
    ["Safety reviews", String(b.safetyReviews)],
    ["Planned reveals", String(b.plannedReveals)],
  ]);
}

function integer(id: string, label: string, min: number, max: number): number | string {
  const text = byId<HTMLInputElement>(id).value.trim();
  if (!/^\d+$/.test(text)) return `${label}: enter a whole number.`;
  const value = Number(text);
  if (value < min || value > max) return `${label}: between ${min} and ${max}.`;
  return value;
}

async function simulate(): Promise<void> {
  const id = trialId();
  const error = byId("sim-error");
  const trials = integer("sim-trials", "Simulated trials", 1, 100000);
  const subjects = integer("sim-subjects", "Subjects per trial", 0, 1000000);
  const seedText = byId<HTMLInputElement>("sim-seed").value.trim();
  const problems = [
    id === "" ? "Enter the trial id above." : "",
    typeof trials === "string" ? trials : "",
    typeof subjects === "string" ? subjects : "",
    /^\d{1,20}$/.test(seedText) && BigInt(seedText) < 2n ** 64n ? "" : "Seed: a whole number below 2^64.",
  ].filter((p) => p !== "");
  if (problems.length > 0 || typeof trials !== "number" || typeof subjects !== "number") {
    setError(error, problems.join(" "));
    return;
  }
  setError(error, "");
  const button = byId<HTMLButtonElement>("sim-run");
  busy(button, "Simulating…");
  byId("sim-status").textContent = `Simulating ${trials} trials of ${id}…`;
  try {
    const report = await randomisation.simulate({
      design: { case: "trialId", value: id },
      trials,
      subjectsPerTrial: subjects,
      seed: BigInt(seedText),
    });
    renderSimulation(report);
    byId("sim-status").textContent = `Done: ${report.trials} simulated trials.`;
  } catch (e) {
    byId("sim-status").textContent = "";
    setError(error, problemText(describe(e)));
  } finally {
    busy(button, null);
  }
}

function renderSimulation(r: SimulationReport): void {
  setFacts(byId("sim-facts"), [
    ["Method", r.method],
    ["Simulated trials", String(r.trials)],
    ["Subjects per trial", String(r.subjectsPerTrial)],
    ["Allocations", r.allocations.toString()],
    ["Seed", r.seed.toString()],
    ["Deterministic assignments", `${(r.deterministicRate * 100).toFixed(1)}%`],
    ["Correct guesses per trial (mean)", r.meanCorrectGuessesPerTrial.toFixed(1)],
  ]);
  byId("chart-guess").replaceChildren(guessChart(r));
  byId("chart-imbalance").replaceChildren(imbalanceChart(r.imbalance));
  const body = byId("imbalance-table").querySelector("tbody") as HTMLTableSectionElement;
  body.replaceChildren(
    ...r.imbalance.map((row) => {
      const tr = el("tr");
      tr.append(
        el("td", "", row.scope),
        th(row.name.replaceAll(",", ", ")),
        ...[row.meanFinal, row.p95Final, row.meanMax, row.worstMax].map((v) => el("td", "num", v.toFixed(2))),
      );
      return tr;
    }),
  );
  show(byId("sim-out"), true);
}
