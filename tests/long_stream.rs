//! Long streams: the compensated f32 state stays within 1e-5 relative of an
//! f64 reference, where a plain f32 running sum does not (so the check can
//! fail). CI size: 2 x 10^6 tokens; `cargo run --release --example drift`
//! runs 10^7 and more.

#[test]
fn compensated_state_does_not_drift() {
    let r = attnsketch::drift::measure(2_000_000, 2, 99);
    println!("{r:?}");
    assert!(
        r.rel_frobenius <= 1e-5,
        "compensated drift {:.3e}",
        r.rel_frobenius
    );
    assert!(
        r.rel_max_elem <= 1e-5,
        "compensated element drift {:.3e}",
        r.rel_max_elem
    );
    // The plain f32 sum of the same increments is far off: the test discriminates.
    assert!(
        r.naive_rel_frobenius > 5e-5,
        "naive drift only {:.3e}",
        r.naive_rel_frobenius
    );
}
