/* The gpu family, forward (after bn_common.h and gpu_base.cl; the work split is described there). Kernels of
 * many work-items per work-group, sized by the host (conformance/backends/opencl_gpu.py, choose()):
 *   training (and inference that updates the running statistics), small problems: gbn_fwd_fused, one launch:
 *            a work-group per tile of channels over all their positions: shift, sums, tree, statistics
 *            (finish_stats of bn_common.h, by row 0 of each lane), barrier, then y;
 *   training, larger: gbn_fwd_partial (tiles x K chunks: one record per (chunk, channel)) -> gbn_fwd_final (one
 *            work-item per channel merges its K records in order) -> gbn_apply (tiles x K chunks);
 *   inference: gbn_apply alone, from the running statistics.
 * Sums are shifted as in the CPU family: S1 = sum (x - K), S2 = sum (x - K)^2, K the mean of the channel's
 * first G_SHIFT positions (summed by a tree, so every kernel gets the same bits; the partial kernel's chunk 0
 * hands it to the final kernel in `shift`); a channel holding Inf or NaN gets the textbook mean and var NaN
 * (finish_stats). In place (y over x) each element is read and then written by the same work-item, and the
 * fused kernel reads all of its tile before the barrier. */

/* The shift of this work-item's channel (every work-item of the group calls it: a tree). */
inline acc_t g_shift(__global const data_t *x, uint C, uint inner, uint m, uint c, int live, uint lid, uint tr,
                     uint TW, uint RG, __local acc_t *red)
{
    const uint cnt = min(m, (uint)G_SHIFT);
    acc_t s = 0, unused = 0;
    if (live)
        for (gwalk_t w = g_walk(tr, RG, inner); w.p < cnt; g_next(&w, RG, inner))
            s += LOAD(x, g_at(&w, C, c, inner));
    g_tree2(red, lid, tr, TW, RG, &s, &unused);
    return s / (acc_t)cnt;
}

/* y = act((x - mu) a + b) over this work-item's positions [p, p1) step `step` of channel c. */
inline void g_apply(__global const data_t *x, __global data_t *y, uint C, uint inner, uint c, uint p, uint p1,
                    uint step, acc_t mu, acc_t a, acc_t b)
{
    for (gwalk_t w = g_walk(p, step, inner); w.p < p1; g_next(&w, step, inner)) {
        const size_t at = g_at(&w, C, c, inner);
        STORE(ACT1((LOAD(x, at) - mu) * a + b), y, at);
    }
}

/* One record per (chunk k, channel c): part[(k C + c) 2 + {0, 1}] = S1, S2; chunk 0 also writes shift[c]. */
__kernel void gbn_fwd_partial(__global const data_t *x, uint C, uint inner, uint m, uint TW, uint L,
                              __global acc_t *part, __global acc_t *shift, __local acc_t *red)
{
    G_TILE
    const acc_t K = g_shift(x, C, inner, m, c, live, lid, tr, TW, RG, red);
    acc_t s1 = 0, s2 = 0;
    if (live)
        g_sums(x, x, 0, 0, 0, 1, C, inner, c, p0 + tr, p1, RG, K, 0, 0, &s1, &s2);
    g_tree2(red, lid, tr, TW, RG, &s1, &s2);
    if (live && tr == 0) {
        const size_t r = ((size_t)get_group_id(1) * C + c) * 2;
        part[r] = s1;
        part[r + 1] = s2;
        if (get_group_id(1) == 0)
            shift[c] = K;
    }
}

/* One work-item per channel: the K records merged in order, then the statistics (finish_stats). */
__kernel void gbn_fwd_final(__global const acc_t *part, __global const acc_t *shift, __global const data_t *x,
                            uint C, uint inner, uint K, uint m, STATS_ARGS)
{
    const uint c = get_global_id(0);
    if (c >= C)
        return;
    finish_stats(x, C, inner, c, m, shift[c], g_merge(part, C, K, c, 0), g_merge(part, C, K, c, 1), STATS_PASS);
}

/* y from mean_w and stat_w (the batch mean and invstd, is_var == 0; or the running mean and variance). */
__kernel void gbn_apply(__global const data_t *x, __global data_t *y, uint C, uint inner, uint m, uint TW, uint L,
                        __global const acc_t *mean_w, __global const acc_t *stat_w, int is_var, acc_t eps,
                        __global const acc_t *gamma, __global const acc_t *beta, int fix_gamma)
{
    G_TILE
    if (!live)
        return; /* no barrier in this kernel */
    const acc_t a = (fix_gamma ? (acc_t)1 : gamma[c]) * invstd_of(stat_w, c, is_var, eps);
    g_apply(x, y, C, inner, c, p0 + tr, p1, RG, mean_w[c], a, beta[c]);
}

/* The whole of a small problem: one work-group per tile of channels, over all m positions (L = m). */
__kernel void gbn_fwd_fused(__global const data_t *x, __global data_t *y, uint C, uint inner, uint m, uint TW,
                            uint L, __global const acc_t *gamma, __global const acc_t *beta, int fix_gamma,
                            STATS_ARGS, __local acc_t *red)
{
    G_TILE
    const acc_t K = g_shift(x, C, inner, m, c, live, lid, tr, TW, RG, red);
    acc_t s1 = 0, s2 = 0;
    if (live)
        g_sums(x, x, 0, 0, 0, 1, C, inner, c, p0 + tr, p1, RG, K, 0, 0, &s1, &s2);
    g_tree2(red, lid, tr, TW, RG, &s1, &s2);
    if (live && tr == 0)
        finish_stats(x, C, inner, c, m, K, s1, s2, STATS_PASS);
    barrier(CLK_GLOBAL_MEM_FENCE); /* mean_w, invstd_w of the tile's channels, written just above */
    if (live) {
        const acc_t a = (fix_gamma ? (acc_t)1 : gamma[c]) * invstd_w[c];
        g_apply(x, y, C, inner, c, p0 + tr, p1, RG, mean_w[c], a, beta[c]);
    }
}
