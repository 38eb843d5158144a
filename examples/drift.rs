//! Drift of the state over a long stream against an f64 reference.
//! `cargo run --release --example drift -- [N] [D]` (default N = 10^7, D = 2).

fn main() {
    let mut a = std::env::args().skip(1);
    let n: u64 = a.next().and_then(|x| x.parse().ok()).unwrap_or(10_000_000);
    let d: usize = a.next().and_then(|x| x.parse().ok()).unwrap_or(2);
    let t0 = std::time::Instant::now();
    let r = attnsketch::drift::measure(n, d, 99);
    println!("n = {n} tokens, d = dv = {d}, degree 2, entries in [0.5, 1.5)");
    println!(
        "compensated f32 state: rel Frobenius {:.2e}, max element rel {:.2e}",
        r.rel_frobenius, r.rel_max_elem
    );
    println!(
        "plain f32 running sum: rel Frobenius {:.2e}",
        r.naive_rel_frobenius
    );
    println!("({:.1} s)", t0.elapsed().as_secs_f64());
}
