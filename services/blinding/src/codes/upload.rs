//! Pools uploaded by a statistician as (arm, code) rows.
//!
//! Whether an uploaded code hints at its arm cannot be fully checked; what
//! can be is checked here: one format for every arm (so prefix, length and
//! alphabet are shared), codes unique across arms, every arm present and no
//! unknown arm.

use std::collections::HashMap;
use std::fmt;

use equipoise_trial::{Arm, CodeFormat};

use super::CodePool;
use super::format::matches_format;
use super::generate::MIN_UNUSED_CODES_PER_CODE;

/// One uploaded row; rows are numbered from 1 in problems.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadedCode {
    pub arm_id: String,
    pub code: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UploadProblem {
    #[error("row {row}: arm '{arm_id}' is not an arm of the trial")]
    UnknownArm { row: usize, arm_id: String },
    #[error("row {row}: code '{code}' does not match the format '{format}'")]
    FormatMismatch {
        row: usize,
        code: String,
        format: String,
    },
    #[error("row {row}: code '{code}' already appears in row {first_row}")]
    DuplicateCode {
        row: usize,
        code: String,
        first_row: usize,
    },
    /// Names the row, never the arm the stored code belongs to.
    #[error("row {row}: code '{code}' is already in the trial's pools")]
    AlreadyStored { row: usize, code: String },
    #[error("arm '{0}' has no codes")]
    ArmWithoutCodes(String),
    #[error(
        "{count} codes is too many for the format '{format}': a guessed code would be \
         a real one more often than once in 10,000 tries"
    )]
    TooManyForFormat { count: usize, format: String },
}

/// Every problem found in an upload, in row order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadProblems(pub Vec<UploadProblem>);

impl fmt::Display for UploadProblems {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let lines: Vec<String> = self.0.iter().map(ToString::to_string).collect();
        f.write_str(&lines.join("; "))
    }
}

impl std::error::Error for UploadProblems {}

/// One pool per arm, in the order of `arms`, each in upload order (which is
/// then the order of issue), or every problem found.
pub fn validate_upload(
    format: &CodeFormat,
    arms: &[Arm],
    rows: &[UploadedCode],
) -> Result<Vec<CodePool>, UploadProblems> {
    let mut problems = Vec::new();
    let mut pools: Vec<CodePool> = arms
        .iter()
        .map(|arm| CodePool {
            arm_id: arm.id.clone(),
            codes: Vec::new(),
        })
        .collect();
    let arm_index: HashMap<&str, usize> = arms
        .iter()
        .enumerate()
        .map(|(index, arm)| (arm.id.as_str(), index))
        .collect();
    let mut first_rows: HashMap<&str, usize> = HashMap::new();
    for (offset, row) in rows.iter().enumerate() {
        let number = offset + 1;
        if let Some(problem) = row_problem(format, &arm_index, &mut first_rows, number, row) {
            problems.push(problem);
        } else if let Some(index) = arm_index.get(row.arm_id.as_str()) {
            pools[*index].codes.push(row.code.clone());
        }
    }
    problems.extend(
        pools
            .iter()
            .filter(|pool| pool.codes.is_empty())
            .map(|pool| UploadProblem::ArmWithoutCodes(pool.arm_id.clone())),
    );
    if too_many_for_format(format, rows.len()) {
        problems.push(UploadProblem::TooManyForFormat {
            count: rows.len(),
            format: format.source.clone(),
        });
    }
    if problems.is_empty() {
        Ok(pools)
    } else {
        Err(UploadProblems(problems))
    }
}

/// A top-up of pools already holding `stored` codes: as [`validate_upload`],
/// except that an arm may be left out (its pool is absent from the result)
/// and the format must leave room for the stored and the new codes together.
/// Clashes with stored codes are the store's to find, under its lock.
pub fn validate_top_up(
    format: &CodeFormat,
    arms: &[Arm],
    rows: &[UploadedCode],
    stored: usize,
) -> Result<Vec<CodePool>, UploadProblems> {
    // The upload's own problems, less the two a top-up judges differently.
    let mut problems = match validate_upload(format, arms, rows) {
        Ok(_) => Vec::new(),
        Err(UploadProblems(problems)) => problems
            .into_iter()
            .filter(|problem| {
                !matches!(
                    problem,
                    UploadProblem::ArmWithoutCodes(_) | UploadProblem::TooManyForFormat { .. }
                )
            })
            .collect(),
    };
    let total = stored.saturating_add(rows.len());
    if too_many_for_format(format, total) {
        problems.push(UploadProblem::TooManyForFormat {
            count: total,
            format: format.source.clone(),
        });
    }
    if !problems.is_empty() {
        return Err(UploadProblems(problems));
    }
    Ok(top_up_pools(arms, rows))
}

/// The rows as pools in the order of `arms`, arms without rows left out.
/// Only called once every row was found valid.
fn top_up_pools(arms: &[Arm], rows: &[UploadedCode]) -> Vec<CodePool> {
    arms.iter()
        .map(|arm| CodePool {
            arm_id: arm.id.clone(),
            codes: rows
                .iter()
                .filter(|row| row.arm_id == arm.id)
                .map(|row| row.code.clone())
                .collect(),
        })
        .filter(|pool| !pool.codes.is_empty())
        .collect()
}

/// The first problem of one row, if any; the code is remembered even when
/// the arm is wrong, so a later copy is still reported as a duplicate.
fn row_problem<'a>(
    format: &CodeFormat,
    arm_index: &HashMap<&str, usize>,
    first_rows: &mut HashMap<&'a str, usize>,
    number: usize,
    row: &'a UploadedCode,
) -> Option<UploadProblem> {
    if !matches_format(format, &row.code) {
        return Some(UploadProblem::FormatMismatch {
            row: number,
            code: row.code.clone(),
            format: format.source.clone(),
        });
    }
    if let Some(first_row) = first_rows.get(row.code.as_str()) {
        return Some(UploadProblem::DuplicateCode {
            row: number,
            code: row.code.clone(),
            first_row: *first_row,
        });
    }
    first_rows.insert(&row.code, number);
    if !arm_index.contains_key(row.arm_id.as_str()) {
        return Some(UploadProblem::UnknownArm {
            row: number,
            arm_id: row.arm_id.clone(),
        });
    }
    None
}

fn too_many_for_format(format: &CodeFormat, count: usize) -> bool {
    (count as f64 * MIN_UNUSED_CODES_PER_CODE).log2() > format.entropy_bits()
}
