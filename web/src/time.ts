import type { Timestamp } from "@bufbuild/protobuf/wkt";
import { timestampDate } from "@bufbuild/protobuf/wkt";

/** A protobuf timestamp in UTC, to the second; "" when unset. */
export function utc(ts: Timestamp | undefined): string {
  if (ts === undefined) return "";
  return timestampDate(ts).toISOString().replace(/\.\d{3}Z$/, "Z").replace("T", " ").replace("Z", " UTC");
}

/** Seconds since the epoch, in UTC, with how long ago. */
export function secondsAgo(seconds: number, now: Date = new Date()): string {
  const at = new Date(seconds * 1000);
  const minutes = Math.round((now.getTime() - at.getTime()) / 60000);
  const text = at.toISOString().replace(/\.\d{3}Z$/, "Z").replace("T", " ").replace("Z", " UTC");
  if (minutes < 1) return `${text} (just now)`;
  if (minutes < 120) return `${text} (${minutes} min ago)`;
  return `${text} (${Math.round(minutes / 60)} h ago)`;
}
