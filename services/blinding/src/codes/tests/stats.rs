//! The little statistics the tests need: a chi-square test of independence
//! on a contingency table and its p-value.

/// Pearson's statistic and degrees of freedom for a rows × columns table of
/// counts; empty rows and columns are dropped, as they carry no information.
pub fn chi_square(table: &[Vec<u64>]) -> (f64, u32) {
    let rows: Vec<&Vec<u64>> = table.iter().filter(|r| r.iter().sum::<u64>() > 0).collect();
    let width = rows.first().map_or(0, |r| r.len());
    let column_totals: Vec<u64> = (0..width)
        .map(|c| rows.iter().map(|r| r[c]).sum())
        .collect();
    let columns: Vec<usize> = (0..width).filter(|c| column_totals[*c] > 0).collect();
    let total: u64 = column_totals.iter().sum();
    let mut statistic = 0.0;
    for row in &rows {
        let row_total: u64 = row.iter().sum();
        for c in &columns {
            let expected = row_total as f64 * column_totals[*c] as f64 / total as f64;
            statistic += (row[*c] as f64 - expected).powi(2) / expected;
        }
    }
    let df = (rows.len().saturating_sub(1) * columns.len().saturating_sub(1)) as u32;
    (statistic, df)
}

/// P(X ≥ statistic) for X chi-square with `df` degrees of freedom: the
/// upper regularised gamma function Q(df/2, statistic/2).
pub fn chi_square_p_value(statistic: f64, df: u32) -> f64 {
    if df == 0 || statistic <= 0.0 {
        return 1.0;
    }
    statrs::function::gamma::gamma_ur(f64::from(df) / 2.0, statistic / 2.0)
}

#[test]
fn p_values_match_published_critical_values() {
    // Upper 0.001 and 0.05 points of the chi-square distribution.
    for (statistic, df, p) in [
        (10.828, 1, 0.001),
        (3.841, 1, 0.05),
        (61.098, 31, 0.001),
        (27.877, 9, 0.001),
        (16.919, 9, 0.05),
    ] {
        let computed = chi_square_p_value(statistic, df);
        assert!((computed - p).abs() < p * 1e-3, "df {df}: {computed}");
    }
}

#[test]
fn chi_square_of_a_known_table() {
    // 2 × 2 with expected counts all 25: (5² / 25) × 4 = 4.
    let (statistic, df) = chi_square(&[vec![30, 20], vec![20, 30]]);
    assert!((statistic - 4.0).abs() < 1e-12);
    assert_eq!(df, 1);
}
