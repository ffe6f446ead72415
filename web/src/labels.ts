// Enum values in words. The page never names an arm of its own accord: an
// arm's id and label come only from a Reveal, shown to its requester.
import { BlindingState, PoolLevel, ReasonCategory, RevealKind } from "./gen/equipoise/blinding/v1/blinding_pb";
import { TrialState } from "./gen/equipoise/randomisation/v1/randomisation_pb";

export const REASON_CATEGORIES: Array<[ReasonCategory, string]> = [
  [ReasonCategory.SERIOUS_ADVERSE_EVENT, "Serious adverse event"],
  [ReasonCategory.OVERDOSE_OR_MEDICATION_ERROR, "Overdose or medication error"],
  [ReasonCategory.CONCOMITANT_TREATMENT_DECISION, "Concomitant treatment decision"],
  [ReasonCategory.PREGNANCY, "Pregnancy"],
  [ReasonCategory.OTHER_MEDICAL_EMERGENCY, "Other medical emergency"],
];

export function reasonCategory(value: ReasonCategory): string {
  return REASON_CATEGORIES.find(([v]) => v === value)?.[1] ?? "Not stated";
}

export function blindingState(value: BlindingState): string {
  switch (value) {
    case BlindingState.BLINDED:
      return "Blinded";
    case BlindingState.UNBLINDED_EMERGENCY:
      return "Unblinded in an emergency";
    case BlindingState.UNBLINDED_PLANNED:
      return "Unblinded as planned (crossover period)";
    default:
      return "Unknown";
  }
}

export function revealKind(value: RevealKind): string {
  switch (value) {
    case RevealKind.EMERGENCY:
      return "Emergency unblinding";
    case RevealKind.SAFETY_REVIEW:
      return "Safety review";
    case RevealKind.PLANNED_PERIOD:
      return "Planned period reveal";
    case RevealKind.PREPARATION:
      return "Preparation";
    default:
      return "Reveal";
  }
}

export function poolLevel(value: PoolLevel): [string, string] {
  switch (value) {
    case PoolLevel.SUFFICIENT:
      return ["Sufficient", "ok"];
    case PoolLevel.LOW:
      return ["Low: prepare a top-up of treatment codes", "warn"];
    case PoolLevel.EMPTY:
      return ["Empty: randomisation is refused for an arm until a top-up", "bad"];
    default:
      return ["Not known", ""];
  }
}

export function trialState(value: TrialState): string {
  switch (value) {
    case TrialState.DRAFT:
      return "Draft";
    case TrialState.ACTIVE:
      return "Active";
    case TrialState.CLOSED:
      return "Closed";
    default:
      return "Unknown";
  }
}
