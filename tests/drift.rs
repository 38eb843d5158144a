//! CI-sized numerics at scale: 10^6 causal tokens at d = dv = 4, g = 2 stay
//! within 1e-5 (normwise relative) of a compensated f64 reference, with
//! every output finite. `examples/drift_causal.rs` runs the same for 10^8 tokens.
#[path = "../examples/drift_causal.rs"]
mod drift;

#[test]
fn million_tokens_stay_within_1e_5_of_f64() {
    let r = drift::run(1_000_000, 4, 2);
    eprintln!("{r:?}");
    assert_eq!(r.tokens, 1_000_000);
    assert_eq!(r.nonfinite_outputs, 0);
    assert!(r.normwise_m <= 1e-5, "{r:?}");
    assert!(r.normwise_z <= 1e-5, "{r:?}");
    assert!(r.conditioned <= 1e-5, "{r:?}");
}
