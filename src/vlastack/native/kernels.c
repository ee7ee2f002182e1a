/* vlastack's native CPU kernels for batch-1 inference: a small-row fp32 product over weights
 * packed once, with bias, activation and residual fused into its epilogue, and attention over a
 * few tokens read straight from the projections' output.
 *
 * Why by hand: a policy chunk at batch 1 is ~20 products of 3-16 rows. The libraries torch
 * calls for them either re-pack the weight on every call (MKL's sgemm) or set up a primitive
 * descriptor on every call (oneDNN's prepacked linear, 15-40 us each); neither streams the
 * weight from L3 at the rate the core can use it (BENCHMARKS.md, session 12: 87-92 GFLOP/s for
 * oneDNN on the ACT chunk's 16 products against 130 for this kernel, 198 peak). Nothing here is
 * a general BLAS: one register-blocked micro-kernel, the panel layout it reads, and the
 * epilogues the plans need. Built by vlastack.native with the host compiler for the host CPU
 * (-march=native); GCC/Clang vector extensions give AVX-512, AVX2 or SSE code from one source.
 *
 * Layout of a packed weight W (N x K, row-major as nn.Linear holds it): panels of NR output
 * columns, panel p holding W[p*NR + j, k] at [(p*K + k)*NR + j], zero-padded past N; the bias
 * padded to a multiple of NR. vlastack.native.pack_linear writes it.
 */
#include <math.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#define VL_ABI 4

typedef float vf __attribute__((vector_size(64)));
typedef int vi __attribute__((vector_size(64)));
#define VL 16 /* floats in vf */

/* register blocking: MR rows x NV vectors of 16 columns. 2 x 8 keeps 16 accumulators in the
 * 32 AVX-512 registers; with 16 AVX2 registers (a vf is two of them) 1 x 6 keeps 12 */
#if defined(__AVX512F__)
#define NV 2
#define MR 8
#else
#define NV 1
#define MR 6
#endif
#define NR (VL * NV)
/* how far ahead, in floats, the packed weight is prefetched (the next panel is contiguous):
 * 256-512 measured best on the ACT chunk's products (130 vs 114 GFLOP/s without) */
#define PREFETCH 512

int vl_abi(void) { return VL_ABI; }
int vl_nr(void) { return NR; }

static inline vf ld(const float *p) {
    vf v;
    memcpy(&v, p, sizeof v);
    return v;
}
static inline void st(float *p, vf v) { memcpy(p, &v, sizeof v); }
static inline vf splat(float s) { return (vf){0} + s; }
#define SIGN ((vi){0} + (int)0x80000000) /* not splat(-0.0f): 0.0f + -0.0f is +0.0f */
static inline vf vmax(vf a, vf b) { return (vf)(((vi)a & (a > b)) | ((vi)b & ~(a > b))); }
static inline vf vmin(vf a, vf b) { return (vf)(((vi)a & (a < b)) | ((vi)b & ~(a < b))); }

/* e^x: Cephes' expf range reduction and polynomial, ~1 ulp on [-87, 88]; x is clamped to
 * that range (so e^-inf gives ~1e-38, not 0: callers that need 0 say so) */
static inline vf vexp(vf x) {
    x = vmin(vmax(x, splat(-87.0f)), splat(88.0f));
    vf n = x * 1.44269504088896341f;
    /* round to nearest */
    vi ni = __builtin_convertvector(n + (vf)((vi)splat(0.5f) | ((vi)n & SIGN)), vi);
    vf nf = __builtin_convertvector(ni, vf);
    vf r = x - nf * 0.693359375f - nf * -2.12194440e-4f;
    vf p = splat(1.9875691500e-4f);
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r * r + r + 1.0f;
    vi e = (ni + 127) << 23;
    return p * (vf)e;
}

/* exact-form GELU, x/2 (1 + erf(x / sqrt 2)), erf by Abramowitz & Stegun 7.1.26 (absolute error
 * <= 1.5e-7), the approximation PyTorch's vectorized CPU erf uses too */
static inline vf vgelu(vf x) {
    vf z = x * 0.70710678118654752f;
    vf sign = (vf)((vi)z & SIGN);
    vf a = (vf)((vi)z & ~SIGN);
    vf t = 1.0f / (1.0f + 0.3275911f * a);
    vf y = splat(1.061405429f);
    y = y * t - 1.453152027f;
    y = y * t + 1.421413741f;
    y = y * t - 0.284496736f;
    y = y * t + 0.254829592f;
    y = 1.0f - y * t * vexp(-a * a);
    vf erf = (vf)((vi)y | (vi)sign);
    return 0.5f * x * (1.0f + erf);
}

/* Mish, x tanh(softplus(x)): with n = e^x, tanh(log(1 + n)) = n (n + 2) / (n (n + 2) + 2);
 * past x = 20 that is 1 in float32 */
static inline vf vmish(vf x) {
    vf n = vexp(vmin(x, splat(20.0f)));
    vf u = n * (n + 2.0f);
    return x * (u / (u + 2.0f));
}

enum { ACT_NONE = 0, ACT_RELU = 1, ACT_GELU = 2 };

static inline vf act(vf v, int a) {
    if (a == ACT_RELU) return vmax(v, (vf){0});
    if (a == ACT_GELU) return vgelu(v);
    return v;
}

/* rows [0, mr) of x times one packed panel; mr is a constant at each call site, so the
 * accumulators stay in registers */
static inline __attribute__((always_inline)) void micro(const int mr, const float *x, long ldx,
                                                        const float *wp, long K, const float *bias,
                                                        const float *res, long ldr, float *y,
                                                        long ldy, long ncols, int a) {
    vf acc[MR][NV];
    for (int r = 0; r < mr; r++)
        for (int j = 0; j < NV; j++) acc[r][j] = (vf){0};
    for (long k = 0; k < K; k++) {
        vf w[NV];
        for (int j = 0; j < NV; j++) {
            __builtin_prefetch(wp + k * NR + PREFETCH + VL * j, 0, 3);
            w[j] = ld(wp + k * NR + VL * j);
        }
        for (int r = 0; r < mr; r++) {
            float s = x[r * ldx + k];
            for (int j = 0; j < NV; j++) acc[r][j] += s * w[j];
        }
    }
    for (int r = 0; r < mr; r++) {
        float tmp[NR];
        for (int j = 0; j < NV; j++) {
            vf v = acc[r][j];
            if (bias) v += ld(bias + VL * j);
            v = act(v, a);
            if (ncols == NR) {
                if (res) v += ld(res + r * ldr + VL * j);
                st(y + r * ldy + VL * j, v);
            } else {
                st(tmp + VL * j, v);
            }
        }
        if (ncols != NR)
            for (long j = 0; j < ncols; j++)
                y[r * ldy + j] = tmp[j] + (res ? res[r * ldr + j] : 0.0f);
    }
}

#define MICRO(n) micro(n, xr, ldx, w, K, b, rr, ldr, yr, ldy, nc, a)

/* y = act(x W^T + bias) + res, x (M x K) with row stride ldx, y and res (M x N) with row
 * strides ldy, ldr; bias and res may be NULL; y must not alias x (it may alias res) */
void vl_linear(long M, long N, long K, const float *x, long ldx, const float *wp,
               const float *bias, const float *res, long ldr, float *y, long ldy, int a) {
    long panels = (N + NR - 1) / NR;
    for (long p = 0; p < panels; p++) {
        const float *w = wp + p * K * NR;
        const float *b = bias ? bias + p * NR : NULL;
        long nc = N - p * NR < NR ? N - p * NR : NR;
        for (long m = 0; m < M; m += MR) {
            long mr = M - m < MR ? M - m : MR;
            const float *xr = x + m * ldx;
            float *yr = y + m * ldy + p * NR;
            const float *rr = res ? res + m * ldr + p * NR : NULL;
            switch (mr) {
#if MR == 8
            case 8: MICRO(8); break;
            case 7: MICRO(7); break;
#endif
            case 6: MICRO(6); break;
            case 5: MICRO(5); break;
            case 4: MICRO(4); break;
            case 3: MICRO(3); break;
            case 2: MICRO(2); break;
            default: MICRO(1); break;
            }
        }
    }
}

static inline float hsum(vf v) {
    float s = 0.0f;
    for (int j = 0; j < VL; j++) s += v[j];
    return s;
}

/* one row of LayerNorm (g, bt may be NULL): hr = (xr - mean) / sqrt(var + eps) * g + bt */
static void ln_row(const float *xr, float *hr, long K, const float *g, const float *bt,
                   float eps) {
    long i = 0;
    {
        vf acc = {0};
        float sum = 0.0f;
        for (; i + VL <= K; i += VL) acc += ld(xr + i);
        sum = hsum(acc);
        for (; i < K; i++) sum += xr[i];
        float mean = sum / (float)K;
        acc = (vf){0};
        float sq = 0.0f;
        for (i = 0; i + VL <= K; i += VL) {
            vf d = ld(xr + i) - mean;
            acc += d * d;
        }
        sq = hsum(acc);
        for (; i < K; i++) sq += (xr[i] - mean) * (xr[i] - mean);
        float rstd = 1.0f / sqrtf(sq / (float)K + eps);
        for (i = 0; i < K; i++) {
            float v = (xr[i] - mean) * rstd;
            if (g) v *= g[i];
            if (bt) v += bt[i];
            hr[i] = v;
        }
    }
}

/* vl_linear of LayerNorm(x) (weight g, bias bt, either may be NULL; biased variance, as
 * torch): the normalized rows go to a scratch buffer, not to a tensor of their own. Returns 0,
 * or -1 if out of memory. */
int vl_ln_linear(long M, long N, long K, const float *x, long ldx, const float *g,
                 const float *bt, float eps, const float *wp, const float *bias, const float *res,
                 long ldr, float *y, long ldy, int a) {
    float stack[4096];
    float *h = M * K <= 4096 ? stack : (float *)malloc(sizeof(float) * (size_t)(M * K));
    if (!h) return -1;
    for (long r = 0; r < M; r++) ln_row(x + r * ldx, h + r * K, K, g, bt, eps);
    vl_linear(M, N, K, h, K, wp, bias, res, ldr, y, ldy, a);
    if (h != stack) free(h);
    return 0;
}

/* softmax(scale q k^T, keys where mask != 0) v for every batch b, head h and query t.
 * q[b, t, h*hd + i] at q + b*qb + t*qt + h*hd + i, likewise k (keys s: kb, ks) and v (vb, vs);
 * mask: NULL or (B x S) bytes, nonzero = attend; out: (B, T, H*hd) contiguous. A query whose
 * keys are all masked gets zeros, as torch's CPU SDPA gives. Returns 0, or -1 if out of memory.
 *
 * Vectorized over queries, 16 at a time: per (b, h) the queries are transposed once into
 * qt[i][t], so a key's scores for 16 queries are hd vector FMAs and the softmax runs down the
 * keys on whole vectors; no horizontal sums. */
int vl_attention(long B, long T, long S, long H, long hd, const float *q, long qb, long qt,
                 const float *k, long kb, long ks, const float *v, long vb, long vs,
                 const unsigned char *mask, float scale, float *out) {
    long TV = (T + VL - 1) / VL; /* query vectors */
    long Tp = TV * VL;
    float *qtr = (float *)aligned_alloc(64, sizeof(float) * (size_t)(hd * Tp + S * Tp + Tp));
    if (!qtr) return -1;
    float *sc = qtr + hd * Tp; /* sc[s][t]: scores, then probabilities */
    float *inv = sc + S * Tp;  /* 1 / sum per query */
    long D = H * hd;
    for (long b = 0; b < B; b++) {
        const unsigned char *mb = mask ? mask + b * S : NULL;
        for (long h = 0; h < H; h++) {
            for (long i = 0; i < hd; i++) {
                for (long t = 0; t < T; t++) qtr[i * Tp + t] = q[b * qb + t * qt + h * hd + i];
                for (long t = T; t < Tp; t++) qtr[i * Tp + t] = 0.0f;
            }
            for (long tv = 0; tv < TV; tv++) {
                vf mx = splat(-INFINITY);
                for (long s = 0; s < S; s++) {
                    if (mb && !mb[s]) continue;
                    const float *kr = k + b * kb + s * ks + h * hd;
                    /* four independent sums: one chain of hd dependent FMAs is latency-bound */
                    vf a0 = {0}, a1 = {0}, a2 = {0}, a3 = {0};
                    const float *qv = qtr + tv * VL;
                    long i = 0;
                    for (; i + 4 <= hd; i += 4) {
                        a0 += kr[i] * ld(qv + i * Tp);
                        a1 += kr[i + 1] * ld(qv + (i + 1) * Tp);
                        a2 += kr[i + 2] * ld(qv + (i + 2) * Tp);
                        a3 += kr[i + 3] * ld(qv + (i + 3) * Tp);
                    }
                    for (; i < hd; i++) a0 += kr[i] * ld(qv + i * Tp);
                    vf acc = ((a0 + a1) + (a2 + a3)) * scale;
                    st(sc + s * Tp + tv * VL, acc);
                    mx = vmax(mx, acc);
                }
                vf sum = {0};
                for (long s = 0; s < S; s++) {
                    if (mb && !mb[s]) {
                        st(sc + s * Tp + tv * VL, (vf){0});
                        continue;
                    }
                    vf e = vexp(ld(sc + s * Tp + tv * VL) - mx);
                    st(sc + s * Tp + tv * VL, e);
                    sum += e;
                }
                st(inv + tv * VL, 1.0f / sum); /* all keys masked: 1/0 = inf, caught below */
            }
            const float *vh = v + b * vb + h * hd;
            for (long t = 0; t < T; t++) {
                float *o = out + (b * T + t) * D + h * hd;
                float r = inv[t];
                if (r == INFINITY) { /* every key masked: zeros, as torch's CPU SDPA gives */
                    memset(o, 0, sizeof(float) * (size_t)hd);
                    continue;
                }
                long i = 0;
                for (; i + 4 * VL <= hd; i += 4 * VL) { /* 4 accumulators in registers */
                    vf a0 = {0}, a1 = {0}, a2 = {0}, a3 = {0};
                    for (long s = 0; s < S; s++) {
                        float p = sc[s * Tp + t];
                        const float *vr = vh + s * vs + i;
                        a0 += p * ld(vr);
                        a1 += p * ld(vr + VL);
                        a2 += p * ld(vr + 2 * VL);
                        a3 += p * ld(vr + 3 * VL);
                    }
                    st(o + i, a0 * r);
                    st(o + i + VL, a1 * r);
                    st(o + i + 2 * VL, a2 * r);
                    st(o + i + 3 * VL, a3 * r);
                }
                for (; i + VL <= hd; i += VL) {
                    vf a0 = {0};
                    for (long s = 0; s < S; s++) a0 += sc[s * Tp + t] * ld(vh + s * vs + i);
                    st(o + i, a0 * r);
                }
                for (; i < hd; i++) {
                    float a0 = 0.0f;
                    for (long s = 0; s < S; s++) a0 += sc[s * Tp + t] * vh[s * vs + i];
                    o[i] = a0 * r;
                }
            }
        }
    }
    free(qtr);
    return 0;
}

/* A 1-D convolution over time-major activations, with Diffusion Policy's block epilogue.
 * x (B, T, C) contiguous; the weight packed tap-major, W[n, j*C + c] for tap j (an N x k*C
 * linear layer), so each output step's im2col row is k*C contiguous floats of the padded
 * input and the product reads them in place: T_out = (T + 2p - k) / s + 1 rows at stride s*C.
 * Then, in order, each optional: GroupNorm(groups; gw, gb, eps) and Mish; FiLM, h * fs[b] +
 * fb[b] (fs NULL: h + fb[b]; fs and fb rows at batch stride fstride); + res (B, T_out, N).
 * out (B, T_out, N) contiguous. Returns 0, or -1 if out of memory. */
int vl_conv1d(long B, long T, long C, const float *x, long k, long s, long p, const float *wp,
              const float *bias, long N, long groups, const float *gw, const float *gb, float eps,
              const float *fs, const float *fb, long fstride, const float *res, float *out) {
    long Tp = T + 2 * p, To = (Tp - k) / s + 1;
    float *xp = p ? (float *)malloc(sizeof(float) * (size_t)(Tp * C)) : NULL;
    float *stat = groups ? (float *)malloc(sizeof(float) * (size_t)(3 * N)) : NULL;
    if ((p && !xp) || (groups && !stat)) {
        free(xp);
        free(stat);
        return -1;
    }
    if (p) {
        memset(xp, 0, sizeof(float) * (size_t)(p * C));
        memset(xp + (p + T) * C, 0, sizeof(float) * (size_t)(p * C));
    }
    for (long b = 0; b < B; b++) {
        const float *xb = x + b * T * C;
        float *ob = out + b * To * N;
        if (p) memcpy(xp + p * C, xb, sizeof(float) * (size_t)(T * C));
        const float *rb = res && !groups && !fs && !fb ? res + b * To * N : NULL;
        vl_linear(To, N, k * C, p ? xp : xb, s * C, wp, bias, rb, N, ob, N, ACT_NONE);
        if (rb || (!groups && !fs && !fb && !res)) continue;
        float *scale = stat, *shift = stat + N, *csum = stat + 2 * N;
        if (groups) {
            /* two passes: per-channel sums -> group means, then squared deviations from them */
            long cg = N / groups;
            for (long c = 0; c < N; c++) csum[c] = 0.0f;
            for (long t = 0; t < To; t++)
                for (long c = 0; c < N; c++) csum[c] += ob[t * N + c];
            for (long g = 0; g < groups; g++) {
                float m = 0.0f;
                for (long c = g * cg; c < (g + 1) * cg; c++) m += csum[c];
                m /= (float)(To * cg);
                for (long c = g * cg; c < (g + 1) * cg; c++) shift[c] = m; /* mean, for now */
            }
            for (long c = 0; c < N; c++) csum[c] = 0.0f;
            for (long t = 0; t < To; t++)
                for (long c = 0; c < N; c++) {
                    float d = ob[t * N + c] - shift[c];
                    csum[c] += d * d;
                }
            for (long g = 0; g < groups; g++) {
                float var = 0.0f;
                for (long c = g * cg; c < (g + 1) * cg; c++) var += csum[c];
                float rstd = 1.0f / sqrtf(var / (float)(To * cg) + eps);
                for (long c = g * cg; c < (g + 1) * cg; c++) {
                    scale[c] = rstd * gw[c];
                    shift[c] = gb[c] - shift[c] * scale[c];
                }
            }
        }
        const float *fsb = fs ? fs + b * fstride : NULL, *fbb = fb ? fb + b * fstride : NULL;
        const float *rr = res ? res + b * To * N : NULL;
        for (long t = 0; t < To; t++) {
            float *o = ob + t * N;
            const float *r = rr ? rr + t * N : NULL;
            long c = 0;
            for (; c + VL <= N; c += VL) {
                vf h = ld(o + c);
                if (groups) h = vmish(h * ld(scale + c) + ld(shift + c));
                if (fsb) h *= ld(fsb + c);
                if (fbb) h += ld(fbb + c);
                if (r) h += ld(r + c);
                st(o + c, h);
            }
            if (c < N) { /* the tail through a zero-padded vector */
                float tmp[VL] = {0}, sc[VL] = {0}, sh[VL] = {0};
                long n = N - c;
                memcpy(tmp, o + c, sizeof(float) * (size_t)n);
                vf h = ld(tmp);
                if (groups) {
                    memcpy(sc, scale + c, sizeof(float) * (size_t)n);
                    memcpy(sh, shift + c, sizeof(float) * (size_t)n);
                    h = vmish(h * ld(sc) + ld(sh));
                }
                st(tmp, h);
                for (long j = 0; j < n; j++) {
                    float v = tmp[j];
                    if (fsb) v *= fsb[c + j];
                    if (fbb) v += fbb[c + j];
                    if (r) v += r[c + j];
                    o[c + j] = v;
                }
            }
        }
    }
    free(xp);
    free(stat);
    return 0;
}

/* A pre-norm cross-attention decoder (vlastack's CrossDecoder without FiLM) from block
 * ``start`` on, as DecoderPlan._run_native runs it, in one call: per block LayerNorm -> q/k/v
 * product -> self-attention -> output product + residual; LayerNorm -> q product ->
 * attention to the block's K/V in ``kv`` -> output product + residual; LayerNorm -> FFN
 * (activation ``act``) + residual; then the final LayerNorm into out (B, T, D).
 * x (B, T, D) rows contiguous at batch stride xb (0: one row set for every batch element);
 * first_q: NULL, or block ``start``'s cross-attention queries (B, T, D) at batch stride fqb, its
 * self-attention already applied to x; kv (B, S, L*2*D) contiguous, block i's K then V at
 * column 2*i*D; mask NULL or (B, S) bytes. params: per block 18 pointers, norm1 (g, b),
 * q/k/v (panels, bias), self out, norm2, cross q, cross out, norm3, FFN in, FFN out, then the
 * final norm's (g, b); eps: per block norm1, norm2, norm3, then the final one. F: FFN width.
 * Written as one call because at a batch-1 chunk the Python between ~35 kernel calls cost
 * about a third of the chunk (BENCHMARKS.md, session 12). Returns 0, or -1 if out of memory. */
int vl_decoder(long B, long T, long D, long H, long F, long L, long start, const float *x,
               long xb, const float *first_q, long fqb, const float *kv, long S,
               const unsigned char *mask, void **params, const float *eps, int act, float *out) {
    long M = B * T, hd = D / H, W = 2 * L * D;
    float scale = 1.0f / sqrtf((float)hd);
    float *buf = (float *)malloc(sizeof(float) * (size_t)(M * (D + 3 * D + D + F)));
    if (!buf) return -1;
    float *xs = buf, *t = xs + M * D, *a = t + 3 * M * D, *f = a + M * D;
    for (long b = 0; b < B; b++) memcpy(xs + b * T * D, x + b * xb, sizeof(float) * (size_t)(T * D));
    int rc = 0;
#define PF(j) ((const float *)p[j])
    for (long i = start; i < L && rc == 0; i++) {
        void **p = params + 18 * i;
        const float *e = eps + 3 * i;
        const float *q = t;
        long qb = T * D;
        if (i == start && first_q) {
            q = first_q;
            qb = fqb;
        } else {
            rc |= vl_ln_linear(M, 3 * D, D, xs, D, PF(0), PF(1), e[0], PF(2), PF(3), NULL, 0, t,
                               3 * D, ACT_NONE);
            rc |= vl_attention(B, T, T, H, hd, t, T * 3 * D, 3 * D, t + D, T * 3 * D, 3 * D,
                               t + 2 * D, T * 3 * D, 3 * D, NULL, scale, a);
            vl_linear(M, D, D, a, D, PF(4), PF(5), xs, D, xs, D, ACT_NONE);
            rc |= vl_ln_linear(M, D, D, xs, D, PF(6), PF(7), e[1], PF(8), PF(9), NULL, 0, t, D,
                               ACT_NONE);
        }
        rc |= vl_attention(B, T, S, H, hd, q, qb, D, kv + 2 * i * D, S * W, W,
                           kv + (2 * i + 1) * D, S * W, W, mask, scale, a);
        vl_linear(M, D, D, a, D, PF(10), PF(11), xs, D, xs, D, ACT_NONE);
        rc |= vl_ln_linear(M, F, D, xs, D, PF(12), PF(13), e[2], PF(14), PF(15), NULL, 0, f, F,
                           act);
        vl_linear(M, D, F, f, F, PF(16), PF(17), xs, D, xs, D, ACT_NONE);
    }
    if (rc == 0) {
        void **p = params + 18 * L;
        for (long r = 0; r < M; r++) ln_row(xs + r * D, out + r * D, D, PF(0), PF(1), eps[3 * L]);
    }
#undef PF
    free(buf);
    return rc ? -1 : 0;
}
