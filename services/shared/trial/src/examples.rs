//! The project's example definitions, for tests, benchmarks and the README
//! walkthrough: RESPINE (two-arm, stratified permuted blocks) and FACET-X
//! (crossover with minimisation).

pub const RESPINE: &str = include_str!("../examples/respine.yaml");
pub const FACET_CROSSOVER: &str = include_str!("../examples/facet-crossover.yaml");
