//! The per-token path allocates nothing: a counting global allocator (this
//! binary only) sees zero allocations over many pushes at every level.
//! Only the test thread's allocations count (the harness's own threads may
//! allocate at any time).
use attnsketch::{Config, Level, Mode, Sketch};
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicU64, Ordering};

struct Counting;
static ALLOCS: AtomicU64 = AtomicU64::new(0);

thread_local! {
    static COUNTED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

fn count() {
    if COUNTED.with(|c| c.get()) {
        ALLOCS.fetch_add(1, Ordering::SeqCst);
    }
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        count();
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        count();
        unsafe { System.realloc(p, l, n) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

#[test]
fn per_token_path_allocates_nothing() {
    let (d, dv) = (24usize, 20usize);
    let q: Vec<f32> = (0..d).map(|i| (i as f32 * 0.37).sin()).collect();
    let v: Vec<f32> = (0..dv).map(|i| (i as f32 * 0.11).cos()).collect();
    let h16: Vec<u16> = q
        .iter()
        .map(|&x| half::f16::from_f32(x).to_bits())
        .collect();
    let hv16: Vec<u16> = v
        .iter()
        .map(|&x| half::f16::from_f32(x).to_bits())
        .collect();
    let hb: Vec<u16> = q
        .iter()
        .map(|&x| half::bf16::from_f32(x).to_bits())
        .collect();
    let hvb: Vec<u16> = v
        .iter()
        .map(|&x| half::bf16::from_f32(x).to_bits())
        .collect();
    let mut out = vec![0.0f32; dv];
    let mut checked = 0;
    COUNTED.with(|c| c.set(true));
    for &lv in Level::ALL.iter().filter(|l| l.supported()) {
        let cfg = Config {
            value_dim: dv as u32,
            ..Config::new(d as u32)
        };
        let mut h = Sketch::with_level(&cfg, lv).unwrap();
        let ffi = {
            let c = attnsketch::ffi::to_c(&cfg);
            let mut p = std::ptr::null_mut();
            assert_eq!(
                unsafe { attnsketch::ffi::as_create_at_level(&c, lv as u32, &mut p) },
                0
            );
            p
        };
        let mut nc = Sketch::with_level(
            &Config {
                mode: Mode::NonCausal,
                ..cfg.clone()
            },
            lv,
        )
        .unwrap();
        // Warm-up: first query sizes the thread-local query scratch.
        h.push_token(&q, &q, &v, &mut out).unwrap();
        h.query(&q, &mut out).unwrap();
        nc.append_kv(&q, &v).unwrap();
        nc.push_query(&q, &mut out).unwrap();
        let before = ALLOCS.load(Ordering::SeqCst);
        for _ in 0..200 {
            // 200 tokens cross several 64-token flushes.
            h.push_token(&q, &q, &v, &mut out).unwrap();
            h.push_token_f16(&h16, &h16, &hv16, &mut out).unwrap();
            h.push_token_bf16(&hb, &hb, &hvb, &mut out).unwrap();
            h.query(&q, &mut out).unwrap();
            unsafe {
                assert_eq!(
                    attnsketch::ffi::as_push_token(
                        ffi,
                        q.as_ptr(),
                        q.as_ptr(),
                        v.as_ptr(),
                        out.as_mut_ptr()
                    ),
                    0
                );
            }
            nc.append_kv(&q, &v).unwrap();
            nc.push_query(&q, &mut out).unwrap();
        }
        let after = ALLOCS.load(Ordering::SeqCst);
        assert_eq!(
            after - before,
            0,
            "{lv:?}: {} allocations on the per-token path",
            after - before
        );
        // The counter works: a handle creation allocates.
        let _h2 = Sketch::with_level(&cfg, lv).unwrap();
        assert!(ALLOCS.load(Ordering::SeqCst) > after);
        unsafe { attnsketch::ffi::as_free(ffi) };
        checked += 1;
    }
    assert!(checked >= 1);
}
