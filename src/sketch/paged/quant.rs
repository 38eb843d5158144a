//! Token encodings of the paged hybrid (`AS_KEYS_U4` / `AS_VALUES_U4`).
//!
//! **4-bit groups.** A group of numbers `x_1..x_n` (the 32 tokens of a page
//! in one key channel, or 32 channels of one value row) is stored as
//! `x_i ~ lo + step * c_i` with codes `c_i` in `0..=15` and `lo`, `step` in
//! binary16: `lo = f16 rounded down of min x`, `step = f16 rounded up of
//! (max x - lo) / 15`, `c_i = round((x_i - lo) / step)`. The directed
//! roundings keep every code in range, so the error is at most `step / 2`
//! (plus one binary16 rounding of `lo` when the group is constant). This is
//! KIVI's asymmetric quantization (Liu et al. 2024): keys per channel over
//! tokens, values per token over channels.
//!
//! **Nibble layout** (what `Kernels::u4_row_dots` / `u4_rows` read): a row of
//! `d` codes is `d / 2` bytes; each 32-channel group is 16 bytes, byte `t`
//! holding channel `t` in its low and channel `t + 16` in its high nibble.
//!
//! **Int8 rows** (heavy keys): `k ~ s n`, `s = max |k_c| / 127` (f32),
//! `n_c = round(k_c / s)`.

use half::f16;

/// Channels per nibble group of the code layout, and tokens per key group.
pub const G: usize = 32;

/// Channels per value group (one `(lo, step)` each): 32 for every `dv`.
/// Measured end to end (SmolLM2, 8192 tokens of dpkg's triggers spec, 1 MiB
/// per kv head, every token kept at 4 bits): 32-channel groups +0.12%
/// perplexity, 64-channel +0.70% (KIVI-4's 32-channel window +0.45%); at
/// 4096 tokens the two had looked alike (+0.25% / +0.17%). Kept as a
/// function of `dv` so the layout can depend on it.
pub fn value_group(_dv: usize) -> usize {
    G
}

/// Largest code.
const CMAX: f32 = 15.0;
/// Largest magnitude a 4-bit group can hold (binary16 range, with room for
/// `lo + 15 step`).
pub const U4_MAX_INPUT: f32 = 16384.0;

/// The largest binary16 not above `x` (finite `x` within the binary16 range).
fn f16_down(x: f32) -> f16 {
    let h = f16::from_f32(x);
    if h.to_f32() <= x {
        return h;
    }
    let b = h.to_bits();
    // One ulp toward -inf: magnitude up for negatives, down for positives.
    f16::from_bits(if b & 0x8000 != 0 {
        b + 1
    } else if b == 0 {
        0x8001
    } else {
        b - 1
    })
}

/// The smallest binary16 not below `x >= 0` (finite, within range).
fn f16_up(x: f32) -> f16 {
    let h = f16::from_f32(x);
    if h.to_f32() >= x {
        h
    } else {
        f16::from_bits(h.to_bits() + 1)
    }
}

/// `(lo, step)` of a group with minimum `mn` and maximum `mx`.
fn params(mn: f32, mx: f32) -> (f16, f16) {
    let lo = f16_down(mn);
    let step = f16_up((mx - lo.to_f32()) / CMAX);
    (lo, step)
}

/// Code of `x` in a group `(lo, step)`.
#[inline]
fn code(x: f32, lo: f32, inv: f32) -> u8 {
    ((x - lo) * inv).round().clamp(0.0, CMAX) as u8
}

/// Writes code `c` of channel `ch` into a row in the nibble layout.
#[inline]
fn put(row: &mut [u8], ch: usize, c: u8) {
    let (g, t) = (ch / G, ch % G);
    let b = &mut row[g * G / 2 + t % (G / 2)];
    if t < G / 2 {
        *b = (*b & 0xF0) | c;
    } else {
        *b = (*b & 0x0F) | (c << 4);
    }
}

/// Code of channel `ch` of a row in the nibble layout.
#[inline]
pub fn get(row: &[u8], ch: usize) -> u8 {
    let (g, t) = (ch / G, ch % G);
    let b = row[g * G / 2 + t % (G / 2)];
    if t < G / 2 {
        b & 15
    } else {
        b >> 4
    }
}

/// Encodes `n` key rows (`rows`: n x d, `n <= 32`) per channel: `codes` gets
/// n rows of `d / 2` bytes, `lo` and `step` the d channels' parameters.
pub fn encode_page_keys(
    rows: &[f32],
    d: usize,
    codes: &mut [u8],
    lo: &mut [u16],
    step: &mut [u16],
) {
    let n = rows.len() / d;
    codes[..n * d / 2].fill(0);
    for c in 0..d {
        let (mut mn, mut mx) = (f32::INFINITY, f32::NEG_INFINITY);
        for r in 0..n {
            let x = rows[r * d + c];
            mn = mn.min(x);
            mx = mx.max(x);
        }
        let (l, s) = params(mn, mx);
        lo[c] = l.to_bits();
        step[c] = s.to_bits();
        let (lf, sf) = (l.to_f32(), s.to_f32());
        let inv = if sf > 0.0 { 1.0 / sf } else { 0.0 };
        for r in 0..n {
            put(
                &mut codes[r * d / 2..(r + 1) * d / 2],
                c,
                code(rows[r * d + c], lf, inv),
            );
        }
    }
}

/// Encodes one value row per group of `vg` channels: `codes` (dv / 2
/// bytes), `lo` and `step` (dv / vg each).
pub fn encode_row(v: &[f32], vg: usize, codes: &mut [u8], lo: &mut [u16], step: &mut [u16]) {
    codes[..v.len() / 2].fill(0);
    for (g, x) in v.chunks_exact(vg).enumerate() {
        let mn = x.iter().fold(f32::INFINITY, |a, &b| a.min(b));
        let mx = x.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b));
        let (l, s) = params(mn, mx);
        lo[g] = l.to_bits();
        step[g] = s.to_bits();
        let (lf, sf) = (l.to_f32(), s.to_f32());
        let inv = if sf > 0.0 { 1.0 / sf } else { 0.0 };
        for (t, &xi) in x.iter().enumerate() {
            put(codes, g * vg + t, code(xi, lf, inv));
        }
    }
}

/// Decodes a value row (see [`encode_row`]) into `out`.
pub fn decode_row(codes: &[u8], vg: usize, lo: &[u16], step: &[u16], out: &mut [f32]) {
    for (c, o) in out.iter_mut().enumerate() {
        let g = c / vg;
        *o = f16::from_bits(lo[g]).to_f32()
            + f16::from_bits(step[g]).to_f32() * get(codes, c) as f32;
    }
}

/// Decodes key row `r` of a page (see [`encode_page_keys`]) into `out`.
pub fn decode_page_key(codes: &[u8], r: usize, lo: &[u16], step: &[u16], out: &mut [f32]) {
    let d = out.len();
    let row = &codes[r * d / 2..(r + 1) * d / 2];
    for (c, o) in out.iter_mut().enumerate() {
        *o = f16::from_bits(lo[c]).to_f32() + f16::from_bits(step[c]).to_f32() * get(row, c) as f32;
    }
}

/// Fine code of `x` against its coarse code `c` in group `(lo, step)`: the
/// rounding residual `r = x - lo - step c` (at most `step / 2`) on a grid of
/// `step / 16`, `e = clamp(round(16 r / step), -8, 7) + 8`, so
/// `x ~ lo + step c + (step / 16)(e - 8)` within `step / 32`.
#[inline]
fn fine_nibble(x: f32, lo: f32, step: f32, c: u8) -> u8 {
    if step > 0.0 {
        (((x - lo - step * c as f32) * (16.0 / step))
            .round()
            .clamp(-8.0, 7.0)
            + 8.0) as u8
    } else {
        8
    }
}

/// Fine plane of `n` key rows encoded by [`encode_page_keys`] (`coarse`,
/// `lo`, `step`): `fine` gets n rows of `d / 2` bytes of `e` (nibble layout).
pub fn encode_page_keys_fine(
    rows: &[f32],
    d: usize,
    coarse: &[u8],
    lo: &[u16],
    step: &[u16],
    fine: &mut [u8],
) {
    let n = rows.len() / d;
    fine[..n * d / 2].fill(0);
    for c in 0..d {
        let (lf, sf) = (
            f16::from_bits(lo[c]).to_f32(),
            f16::from_bits(step[c]).to_f32(),
        );
        for r in 0..n {
            let row = &coarse[r * d / 2..(r + 1) * d / 2];
            let e = fine_nibble(rows[r * d + c], lf, sf, get(row, c));
            put(&mut fine[r * d / 2..(r + 1) * d / 2], c, e);
        }
    }
}

/// Fine plane of one value row encoded by [`encode_row`].
pub fn encode_row_fine(
    v: &[f32],
    vg: usize,
    coarse: &[u8],
    lo: &[u16],
    step: &[u16],
    fine: &mut [u8],
) {
    fine[..v.len() / 2].fill(0);
    for (c, &x) in v.iter().enumerate() {
        let g = c / vg;
        let (lf, sf) = (
            f16::from_bits(lo[g]).to_f32(),
            f16::from_bits(step[g]).to_f32(),
        );
        put(fine, c, fine_nibble(x, lf, sf, get(coarse, c)));
    }
}

/// `x` refined by fine code `e` of a coarse decode `base = lo + step c`.
#[inline]
pub fn refine(base: f32, step: f32, e: u8) -> f32 {
    base + step * (1.0 / 16.0) * (e as f32 - 8.0)
}

/// Encodes an int8 row: returns the scale `s = max |k| / 127` (0 for a zero row).
pub fn encode_i8(k: &[f32], n: &mut [i8]) -> f32 {
    let amax = k.iter().fold(0.0f32, |a, &x| a.max(x.abs()));
    if amax == 0.0 {
        n.fill(0);
        return 0.0;
    }
    let s = amax / 127.0;
    let inv = 1.0 / s;
    for (o, &x) in n.iter_mut().zip(k) {
        *o = (x * inv).round().clamp(-127.0, 127.0) as i8;
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directed_roundings_bracket() {
        for &x in &[0.1f32, -0.1, 1e-7, -1e-7, 3.3333, -65000.0, 0.0, 12345.678] {
            assert!(f16_down(x).to_f32() <= x, "{x}");
        }
        for &x in &[0.1f32, 1e-7, 3.3333, 0.0, 1000.7] {
            assert!(f16_up(x).to_f32() >= x, "{x}");
        }
    }

    #[test]
    fn groups_round_within_half_a_step() {
        let mut s = 7u64;
        let mut next = || {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 33) as f32 / (1u64 << 31) as f32 - 0.5) * 20.0
        };
        let (n, d) = (32usize, 64usize);
        let mut rows: Vec<f32> = (0..n * d).map(|_| next()).collect();
        rows[5] = 50.0; // an outlier channel value
        let mut codes = vec![0u8; n * d / 2];
        let (mut lo, mut st) = (vec![0u16; d], vec![0u16; d]);
        encode_page_keys(&rows, d, &mut codes, &mut lo, &mut st);
        let mut k = vec![0.0f32; d];
        for r in 0..n {
            decode_page_key(&codes, r, &lo, &st, &mut k);
            for c in 0..d {
                let step = f16::from_bits(st[c]).to_f32();
                assert!(
                    (k[c] - rows[r * d + c]).abs() <= 0.5 * step * 1.0001 + 1e-6,
                    "r {r} c {c}"
                );
            }
        }
        let v: Vec<f32> = (0..d).map(|_| next()).collect();
        for vg in [32usize, 64] {
            let (mut c2, mut l2, mut s2) =
                (vec![0u8; d / 2], vec![0u16; d / vg], vec![0u16; d / vg]);
            encode_row(&v, vg, &mut c2, &mut l2, &mut s2);
            let mut back = vec![0.0f32; d];
            decode_row(&c2, vg, &l2, &s2, &mut back);
            for c in 0..d {
                let step = f16::from_bits(s2[c / vg]).to_f32();
                assert!((back[c] - v[c]).abs() <= 0.5 * step * 1.0001 + 1e-6);
            }
        }
    }
}
