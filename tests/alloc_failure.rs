//! Allocation failure: a global allocator that fails the k-th allocation of
//! the current thread, for every k, while creating, deserializing,
//! serializing, querying and merging heads (safe API and C ABI). Every call
//! must return `Alloc` / `AS_ERR_ALLOC` (or succeed) and never abort the
//! process (`handle_alloc_error` would kill this test binary).
use attnsketch::ffi::handles::as_sketch;
use attnsketch::ffi::*;
use attnsketch::{Config, Error, Level, Mode, Sketch};
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

struct FailNth;

thread_local! {
    /// Allocations still allowed before the injected failure (usize::MAX: off).
    static LEFT: Cell<usize> = const { Cell::new(usize::MAX) };
    /// Set when the injected failure happened.
    static HIT: Cell<bool> = const { Cell::new(false) };
}

fn should_fail() -> bool {
    LEFT.try_with(|l| {
        let n = l.get();
        if n == usize::MAX {
            return false;
        }
        if n == 0 {
            l.set(usize::MAX);
            HIT.with(|h| h.set(true));
            return true;
        }
        l.set(n - 1);
        false
    })
    .unwrap_or(false)
}

unsafe impl GlobalAlloc for FailNth {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        if should_fail() {
            return std::ptr::null_mut();
        }
        unsafe { System.alloc(l) }
    }
    unsafe fn alloc_zeroed(&self, l: Layout) -> *mut u8 {
        if should_fail() {
            return std::ptr::null_mut();
        }
        unsafe { System.alloc_zeroed(l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        if should_fail() {
            return std::ptr::null_mut();
        }
        unsafe { System.realloc(p, l, n) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        unsafe { System.dealloc(p, l) }
    }
}

#[global_allocator]
static A: FailNth = FailNth;

/// Runs `f` with the k-th allocation failing, for k = 0, 1, ... until a run
/// makes no failure happen. Each result must be Ok or the allocation error.
/// Returns how many allocation sites were failed.
fn every_failure<T>(
    mut f: impl FnMut() -> T,
    is_alloc_err: impl Fn(&T) -> bool,
    is_ok: impl Fn(&T) -> bool,
) -> usize {
    for k in 0..10_000 {
        HIT.with(|h| h.set(false));
        LEFT.with(|l| l.set(k));
        let r = f();
        LEFT.with(|l| l.set(usize::MAX));
        let hit = HIT.with(|h| h.get());
        if !hit {
            assert!(is_ok(&r), "k={k}: no failure injected but the call failed");
            return k;
        }
        assert!(is_ok(&r) || is_alloc_err(&r), "k={k}: wrong outcome");
    }
    panic!("too many allocations");
}

fn cfg(mode: Mode) -> Config {
    let mut c = Config::new(5);
    c.value_dim = 3;
    c.degree = 3;
    c.mode = mode;
    c
}

#[test]
fn allocation_failures_are_reported_not_fatal() {
    let _ = Level::detect(); // process-wide detection allocates once; do it first
    for mode in [Mode::Causal, Mode::NonCausal] {
        let c = cfg(mode);
        // Safe API: create.
        let n = every_failure(
            || Sketch::new(&c),
            |r| matches!(r, Err(Error::Alloc)),
            |r| r.is_ok(),
        );
        assert!(n >= 5, "create made only {n} allocations");
        // Serialize / deserialize.
        let mut h = Sketch::new(&c).unwrap();
        let x = [0.25f32; 5];
        let mut o = [0.0f32; 3];
        for _ in 0..10 {
            match mode {
                Mode::Causal => h.push_token(&x, &x, &x[..3], &mut o).unwrap(),
                Mode::NonCausal => h.append_kv(&x, &x[..3]).unwrap(),
            }
        }
        every_failure(
            || h.serialize(),
            |r| matches!(r, Err(Error::Alloc)),
            |r| r.is_ok(),
        );
        let bytes = h.serialize().unwrap();
        let n = every_failure(
            || Sketch::deserialize(&bytes),
            |r| matches!(r, Err(Error::Alloc)),
            |r| r.is_ok(),
        );
        assert!(n >= 5);
        // C ABI: create and deserialize (the boxed handle itself included).
        let cc = to_c(&c);
        every_failure(
            || {
                let mut p: *mut as_sketch = std::ptr::null_mut();
                let st = unsafe { as_create(&cc, &mut p) };
                unsafe { as_free(p) };
                (st, p.is_null())
            },
            |&(st, null)| st == AS_ERR_ALLOC && null,
            |&(st, null)| st == AS_OK && !null,
        );
        every_failure(
            || {
                let mut p: *mut as_sketch = std::ptr::null_mut();
                let st = unsafe { as_deserialize(bytes.as_ptr(), bytes.len(), &mut p) };
                unsafe { as_free(p) };
                (st, p.is_null())
            },
            |&(st, null)| st == AS_ERR_ALLOC && null,
            |&(st, null)| st == AS_OK && !null,
        );
        // Query on a fresh thread (its scratch is allocated on first use);
        // a failed query leaves the output untouched.
        let hb = Sketch::deserialize(&bytes).unwrap();
        std::thread::scope(|s| {
            s.spawn(|| {
                every_failure(
                    || {
                        let mut out = [9.0f32; 3];
                        let r = hb.query(&x, &mut out);
                        (r, out)
                    },
                    |(r, out)| *r == Err(Error::Alloc) && *out == [9.0; 3],
                    |(r, _)| r.is_ok(),
                );
            });
        });
        // Merge allocates nothing.
        let mut a = Sketch::deserialize(&bytes).unwrap();
        let k = every_failure(|| a.merge(&hb), |_| false, |r| r.is_ok());
        assert_eq!(k, 0);
    }
}
