//! Exports of the paper's decode: `as_recover_column` and `as_heavy_tokens`.

use super::handles::{as_sketch, get_ref, input, out_ptr};
use super::panic::guard;
use super::status::as_status;
use crate::error::Error;

/// Writes `pairs` into `idx`/`val` (each `k` elements) and their count into
/// `found`. Every pointer was checked before the computation.
///
/// # Safety
/// `idx`, `val` hold `k >= pairs.len()` writable elements; `found` is writable.
unsafe fn write_pairs(pairs: &[(u64, f32)], idx: *mut u64, val: *mut f32, found: *mut u32) {
    for (i, &(j, v)) in pairs.iter().enumerate() {
        // SAFETY: i < pairs.len() <= k, per the caller.
        unsafe {
            idx.add(i).write(j);
            val.add(i).write(v);
        }
    }
    // SAFETY: non-null and aligned (checked by the caller).
    unsafe { found.write(pairs.len() as u32) };
}

/// Checks the three output arrays (k elements each, NULL refused even for k = 0).
fn outputs<T>(idx: *mut u64, val: *mut T, found: *mut u32, k: u32) -> Result<(), Error> {
    // SAFETY: the views only validate NULL, alignment and size; nothing is read.
    unsafe { input(idx as *const u64, k as usize)? };
    unsafe { input(val as *const T, k as usize)? };
    out_ptr(found)?;
    Ok(())
}

/// The paper's decode: a k-sparse approximation of output column `col` over
/// the recorded outputs (causal: output j of token j; non-causal: the i-th
/// `as_push_query`). Writes up to `k` (output index, value) pairs into
/// `idx[k]`, `val[k]`, largest |value| first, and their count into `*found`.
///
/// `AS_ERR_WRONG_MODE`: the handle has no output sketch (`recovery_k == 0`).
/// `AS_ERR_INVALID_ARG`: `col >= value_dim` or `k > recovery_k`.
/// `k == 0` or no recorded output: `AS_OK` with `*found = 0`. Outputs are
/// written only on success. Cost: logarithmic in the number of outputs.
#[no_mangle]
pub unsafe extern "C" fn as_recover_column(
    h: *const as_sketch,
    col: u32,
    k: u32,
    idx: *mut u64,
    val: *mut f32,
    found: *mut u32,
) -> as_status {
    guard(|| {
        // SAFETY: NULL or a live handle, by the contract.
        let h = unsafe { get_ref(h) }?;
        outputs(idx, val, found, k)?;
        let pairs = h.recover_column(col, k)?;
        // SAFETY: checked above; pairs.len() <= k.
        unsafe { write_pairs(&pairs, idx, val, found) };
        Ok(())
    })
}

/// For query `q` (`head_dim` floats), the up-to-`k` past tokens with the
/// largest attention weight, heaviest first, decoded from the key-side
/// sketch. `weight[i]` is the estimated polynomial-kernel weight
/// `P(s q.k_j) / sum_i P(s q.k_i)` (an attention weight; see docs/recovery.md
/// for its relation to softmax weights).
///
/// `AS_ERR_WRONG_MODE`: no key sketch (`retrieval_k == 0`).
/// `AS_ERR_INVALID_ARG`: `k > retrieval_k`; `AS_ERR_NON_FINITE`/`AS_ERR_RANGE`
/// for a bad `q` (as `as_query`), `AS_ERR_RANGE` also when the normaliser is
/// not trustworthy. No absorbed token or `k == 0`: `AS_OK`, `*found = 0`.
#[no_mangle]
pub unsafe extern "C" fn as_heavy_tokens(
    h: *const as_sketch,
    q: *const f32,
    k: u32,
    idx: *mut u64,
    weight: *mut f32,
    found: *mut u32,
) -> as_status {
    guard(|| {
        // SAFETY: NULL or a live handle; q holds head_dim floats.
        let h = unsafe { get_ref(h) }?;
        let q = unsafe { input(q, h.config().head_dim as usize)? };
        outputs(idx, weight, found, k)?;
        let pairs = h.heavy_tokens(q, k)?;
        // SAFETY: checked above; pairs.len() <= k.
        unsafe { write_pairs(&pairs, idx, weight, found) };
        Ok(())
    })
}
