//! AVX2 4-bit row scores on a fixed-point query (`super::u4_fixed`):
//! `vpmaddwd` of 16-bit codes against 16-bit query elements, exact in i32.
//!
//! Per 64 channels (two 16-byte groups, one 32-byte load) the codes become
//! four vectors of 16 i16 with `vpand` / `vpsrlw` and `vpunpck{l,h}bw`
//! against zero (in-lane: vector 0 holds channels 0..8 of both groups,
//! vector 1 8..16, vector 2 16..24, vector 3 24..32), and the query is
//! stored in that order once per call (`prepare`); a last lone group (d
//! mod 64 = 32) is widened in channel order by `vpmovzxbw`. Each code row
//! is decoded once for up to [`MB`] queries; a row's eight i32 lanes per
//! query go to a small buffer, and every eight rows one transposing
//! `vphaddd` reduction gives their eight sums, converted (`vcvtdq2ps`,
//! the one rounding) and scaled by `2^e` (exact).

use super::u4_fixed::{self, MAX_D};
use core::arch::x86_64::*;
use core::mem::MaybeUninit;

/// Queries per pass over the rows.
const MB: usize = 3;
/// Rows per reduction.
const RB: usize = 8;
/// i16 vectors of one prepared query of `MAX_D` channels.
const QV: usize = MAX_D / 16;

/// `out[i n + t] = 2^e_i sum_c qi_ic code(a_t, c)` for the `m = q.len() / d`
/// queries (see `Kernels::u4_row_dots_multi`; `u4_row_dots` is `m = 1`).
/// Shape checks are the caller's (`a` holds `n` rows, `q` `m d` floats,
/// `out` `m n`, `d` a multiple of 32 and at most `MAX_D`).
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn dots(a: &[u8], q: &[f32], d: usize, n: usize, out: &mut [f32]) {
    let m = q.len() / d;
    assert!(d.is_multiple_of(32) && d <= MAX_D, "u4_row_dots: bad d");
    assert!(
        a.len() >= n * d / 2 && out.len() >= m * n,
        "u4_row_dots: short"
    );
    let mut qb = [const { MaybeUninit::<__m256i>::uninit() }; MB * QV];
    let mut i = 0;
    while i < m {
        let mb = (m - i).min(MB);
        let mut sc = [0.0f32; MB];
        for j in 0..mb {
            // SAFETY: q[(i + j) d..][..d] is inside q (i + j < m); the
            // prepared vectors go to qb[j QV..][..d / 16], d / 16 <= QV.
            sc[j] = unsafe {
                prepare(
                    q.as_ptr().add((i + j) * d),
                    d,
                    qb.as_mut_ptr().add(j * QV).cast(),
                )
            };
        }
        // SAFETY: the first mb prepared queries are written; rows t < n
        // span a[t d / 2..][..d / 2]; out rows (i + j) n + t < m n.
        unsafe {
            let k = Pass {
                a: a.as_ptr(),
                q: qb.as_ptr().cast(),
                out: out.as_mut_ptr().add(i * n),
                d,
                n,
            };
            match mb {
                1 => pass::<1>(k, &sc),
                2 => pass::<2>(k, &sc),
                _ => pass::<MB>(k, &sc),
            }
        }
        i += mb;
    }
}

/// Pointers and shape of one pass over the rows.
#[derive(Clone, Copy)]
struct Pass {
    a: *const u8,
    /// `M` prepared queries, `QV` vectors apart.
    q: *const __m256i,
    /// Query j's results at `out[j n + t]`.
    out: *mut f32,
    d: usize,
    n: usize,
}

/// Query `q[..d]` in fixed point (`u4_fixed`), in the vector order the row
/// decode gives, at `dst[..d / 16]`; returns its scale `2^e`.
#[inline(always)]
unsafe fn prepare(q: *const f32, d: usize, dst: *mut __m256i) -> f32 {
    unsafe {
        let abs = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fff_ffff));
        let mut mx = _mm256_setzero_ps();
        for c in (0..d).step_by(8) {
            mx = _mm256_max_ps(mx, _mm256_and_ps(_mm256_loadu_ps(q.add(c)), abs));
        }
        let mut l = [0.0f32; 8];
        _mm256_storeu_ps(l.as_mut_ptr(), mx);
        let m = l.iter().fold(0.0f32, |a, &b| a.max(b));
        let (s, inv) = u4_fixed::scale(m);
        let iv = _mm256_set1_ps(inv);
        // round_ties_even(q_c 2^-e): vcvtps2dq in the default rounding mode
        let cv = |c: usize| _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(q.add(c)), iv));
        // packs(A, B) = [A0..4 B0..4 | A4..8 B4..8]; permute [0 2 1 3] -> [A | B]
        let pk =
            |x: __m256i, y: __m256i| _mm256_permute4x64_epi64::<0xD8>(_mm256_packs_epi32(x, y));
        let mut c = 0;
        let mut o = dst;
        while c + 64 <= d {
            for v in 0..4 {
                // vector v: channels 8v..8v+8 of both groups
                _mm256_storeu_si256(o.add(v), pk(cv(c + 8 * v), cv(c + 32 + 8 * v)));
            }
            o = o.add(4);
            c += 64;
        }
        if c < d {
            // a lone group in channel order
            _mm256_storeu_si256(o, pk(cv(c), cv(c + 8)));
            _mm256_storeu_si256(o.add(1), pk(cv(c + 16), cv(c + 24)));
        }
        s
    }
}

/// `M` queries over every row: per row the codes decoded once, `vpmaddwd`
/// against each query's vectors (memory operands), one i32 vector per
/// query and row into `buf`; every `RB` rows (or at the end) [`reduce`].
#[inline(always)]
unsafe fn pass<const M: usize>(k: Pass, sc: &[f32; MB]) {
    unsafe {
        let z = _mm256_setzero_si256();
        let mut buf = [[z; RB]; M];
        let (full, lone) = (k.d / 64, !k.d.is_multiple_of(64));
        let rb = k.d / 2;
        let mut t0 = 0;
        while t0 < k.n {
            let r = (k.n - t0).min(RB);
            for (dr, t) in (t0..t0 + r).enumerate() {
                let row = k.a.add(t * rb);
                let mut acc = [z; M];
                let mut qo = 0;
                for h in 0..full {
                    let x = codes64(row.add(32 * h));
                    for (j, acc) in acc.iter_mut().enumerate() {
                        let qv = k.q.add(j * QV + qo);
                        let p01 = _mm256_add_epi32(
                            _mm256_madd_epi16(x[0], _mm256_loadu_si256(qv)),
                            _mm256_madd_epi16(x[1], _mm256_loadu_si256(qv.add(1))),
                        );
                        let p23 = _mm256_add_epi32(
                            _mm256_madd_epi16(x[2], _mm256_loadu_si256(qv.add(2))),
                            _mm256_madd_epi16(x[3], _mm256_loadu_si256(qv.add(3))),
                        );
                        *acc = _mm256_add_epi32(*acc, _mm256_add_epi32(p01, p23));
                    }
                    qo += 4;
                }
                if lone {
                    let x = codes32(row.add(32 * full));
                    for (j, acc) in acc.iter_mut().enumerate() {
                        let qv = k.q.add(j * QV + qo);
                        *acc = _mm256_add_epi32(
                            *acc,
                            _mm256_add_epi32(
                                _mm256_madd_epi16(x[0], _mm256_loadu_si256(qv)),
                                _mm256_madd_epi16(x[1], _mm256_loadu_si256(qv.add(1))),
                            ),
                        );
                    }
                }
                for j in 0..M {
                    buf[j][dr] = acc[j];
                }
            }
            for j in 0..M {
                for b in &mut buf[j][r..] {
                    *b = z;
                }
                let s = _mm256_mul_ps(_mm256_cvtepi32_ps(reduce(&buf[j])), _mm256_set1_ps(sc[j]));
                let o = k.out.add(j * k.n + t0);
                if r == RB {
                    _mm256_storeu_ps(o, s);
                } else {
                    let mut l = [0.0f32; RB];
                    _mm256_storeu_ps(l.as_mut_ptr(), s);
                    core::ptr::copy_nonoverlapping(l.as_ptr(), o, r);
                }
            }
            t0 += r;
        }
    }
}

/// The 64 codes of the two 16-byte groups at `p` as i16: vector v holds
/// channels `8v..8v + 8` of the first group, then of the second.
#[inline(always)]
unsafe fn codes64(p: *const u8) -> [__m256i; 4] {
    unsafe {
        let z = _mm256_setzero_si256();
        let m = _mm256_set1_epi8(15);
        let v = _mm256_loadu_si256(p as *const __m256i);
        let lo = _mm256_and_si256(v, m);
        let hi = _mm256_and_si256(_mm256_srli_epi16(v, 4), m);
        [
            _mm256_unpacklo_epi8(lo, z),
            _mm256_unpackhi_epi8(lo, z),
            _mm256_unpacklo_epi8(hi, z),
            _mm256_unpackhi_epi8(hi, z),
        ]
    }
}

/// The 32 codes of the 16-byte group at `p` as i16 in channel order.
#[inline(always)]
unsafe fn codes32(p: *const u8) -> [__m256i; 2] {
    unsafe {
        let m = _mm_set1_epi8(15);
        let v = _mm_loadu_si128(p as *const __m128i);
        [
            _mm256_cvtepu8_epi16(_mm_and_si128(v, m)),
            _mm256_cvtepu8_epi16(_mm_and_si128(_mm_srli_epi16(v, 4), m)),
        ]
    }
}

/// Lane sums of eight i32 vectors: `[sum r_0, .., sum r_7]` (`vphaddd`
/// twice, then the two 128-bit halves added).
#[inline(always)]
unsafe fn reduce(r: &[__m256i; RB]) -> __m256i {
    unsafe {
        let t0 = _mm256_hadd_epi32(r[0], r[1]);
        let t1 = _mm256_hadd_epi32(r[2], r[3]);
        let t2 = _mm256_hadd_epi32(r[4], r[5]);
        let t3 = _mm256_hadd_epi32(r[6], r[7]);
        // u0 = [r0..r3 lanes 0..4 | r0..r3 lanes 4..8], u1 likewise r4..r7
        let u0 = _mm256_hadd_epi32(t0, t1);
        let u1 = _mm256_hadd_epi32(t2, t3);
        _mm256_add_epi32(
            _mm256_permute2x128_si256::<0x20>(u0, u1),
            _mm256_permute2x128_si256::<0x31>(u0, u1),
        )
    }
}
