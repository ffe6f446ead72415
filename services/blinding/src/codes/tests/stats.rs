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

/// P(X ≥ statistic) for X chi-square with `df` degrees of freedom.
pub fn chi_square_p_value(statistic: f64, df: u32) -> f64 {
    if df == 0 {
        return 1.0;
    }
    upper_regularised_gamma(f64::from(df) / 2.0, statistic / 2.0)
}

/// Q(a, x), by its series below a + 1 and its continued fraction above
/// (Numerical Recipes, "Incomplete gamma function").
fn upper_regularised_gamma(a: f64, x: f64) -> f64 {
    if x <= 0.0 {
        return 1.0;
    }
    let log_prefactor = a * x.ln() - x - ln_gamma(a);
    if x < a + 1.0 {
        let (mut term, mut sum, mut n) = (1.0 / a, 1.0 / a, a);
        while term.abs() > sum.abs() * 1e-15 {
            n += 1.0;
            term *= x / n;
            sum += term;
        }
        1.0 - sum * log_prefactor.exp()
    } else {
        let tiny = 1e-300;
        let mut b = x + 1.0 - a;
        let mut c = 1.0 / tiny;
        let mut d = 1.0 / b;
        let mut h = d;
        for i in 1..10_000 {
            let an = -f64::from(i) * (f64::from(i) - a);
            b += 2.0;
            d = an * d + b;
            d = if d.abs() < tiny { tiny } else { d };
            c = b + an / c;
            c = if c.abs() < tiny { tiny } else { c };
            d = 1.0 / d;
            let step = d * c;
            h *= step;
            if (step - 1.0).abs() < 1e-15 {
                break;
            }
        }
        h * log_prefactor.exp()
    }
}

/// Lanczos approximation (g = 7, n = 9), good to about 15 digits.
fn ln_gamma(x: f64) -> f64 {
    const COEFFICIENTS: [f64; 9] = [
        0.999_999_999_999_809_9,
        676.520_368_121_885_1,
        -1_259.139_216_722_402_8,
        771.323_428_777_653_1,
        -176.615_029_162_140_6,
        12.507_343_278_686_905,
        -0.138_571_095_265_720_12,
        9.984_369_578_019_572e-6,
        1.505_632_735_149_311_6e-7,
    ];
    let x = x - 1.0;
    let t = x + 7.5;
    let series = COEFFICIENTS[0]
        + COEFFICIENTS[1..]
            .iter()
            .enumerate()
            .map(|(i, c)| c / (x + i as f64 + 1.0))
            .sum::<f64>();
    0.5 * (2.0 * std::f64::consts::PI).ln() + (x + 0.5) * t.ln() - t + series.ln()
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
