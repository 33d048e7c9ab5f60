/* The gpu family, backward (after bn_common.h and gpu_base.cl; the work split is described there):
 *   sums per channel of g = dy act'(z) and g (x - mu), z = (x - mu) a + beta, a = gamma invstd (act' only in an
 *   act program; mu, invstd: the statistics that normalised, batch or running), then dbeta = sum g,
 *   dgamma = invstd sum g (x - mu) (finish_bwd of bn_common.h), then
 *     normalised with the batch statistics:  dx = a (g - dbeta / m) - a invstd dgamma / m (x - mu);
 *     with the running ones (scale-shift):   dx = a g, which needs no sum, so the sums pass writes it.
 *   small problems: gbn_bwd_fused, one launch (a work-group per tile of channels over all positions: sums, tree,
 *            finish by row 0 of each lane, barrier, dx);
 *   larger: gbn_bwd_partial (tiles x K chunks; writes dx with the running statistics) -> gbn_bwd_final (one
 *            work-item per channel merges its K records in order) -> gbn_bwd_dx (tiles x K; batch statistics).
 * x is the original x (the host hands a copy taken before an in-place forward); dx may be dy's buffer: each
 * element of dy is read, then dx written there, by the same work-item. beta is always an argument (read only in
 * an act program). */

#define G_DX_PASS(c, train)                                                                                    \
    dx_factors((c), m, mean_w, stat_w, is_var, eps, gamma, fix_gamma, dbeta, dgamma_sum, (train) DX_BETA_PASS, \
               &a, &mu, &db, &kx)

/* dx = a (g - db) - kx (x - mu) over this work-item's positions [p, p1) step `step` of channel c. */
inline void g_dx(__global const data_t *x, __global const data_t *dy, __global data_t *dx, uint C, uint inner, uint c,
                 uint p, uint p1, uint step, acc_t a, acc_t mu, acc_t db, acc_t kx, acc_t zb)
{
    for (gwalk_t w = g_walk(p, step, inner); w.p < p1; g_next(&w, step, inner)) {
        const size_t at = g_at(&w, C, c, inner);
        const acc_t v = LOAD(x, at) - mu;
        STORE(a * (DACT1(LOAD(dy, at), v, a, zb) - db) - kx * v, dx, at);
    }
}

/* The sums of this work-item's positions, dx too where write_dx (normalised with the running statistics). */
#define G_BWD_SUMS(write_dx)                                                                                      \
    acc_t s1 = 0, s2 = 0;                                                                                         \
    if (live) {                                                                                                   \
        const acc_t za = (fix_gamma ? (acc_t)1 : gamma[c]) * invstd_of(stat_w, c, is_var, eps);                   \
        g_sums(dy, x, dx, (write_dx), za, 0, C, inner, c, p0 + tr, p1, RG, mean_w[c], za, beta[c], &s1, &s2);     \
    }                                                                                                             \
    g_tree2(red, lid, tr, TW, RG, &s1, &s2);

#define G_BWD_ARGS                                                                                                \
    __global const data_t *x, __global const data_t *dy, __global data_t *dx, uint C, uint inner, uint m, uint TW, \
        uint L, __global const acc_t *mean_w, __global const acc_t *stat_w, int is_var, acc_t eps,               \
        __global const acc_t *gamma, __global const acc_t *beta, int fix_gamma, int train

/* One record per (chunk k, channel c): part[(k C + c) 2 + {0, 1}] = sum g, sum g (x - mu). */
__kernel void gbn_bwd_partial(G_BWD_ARGS, __global acc_t *part, __local acc_t *red)
{
    G_TILE
    G_BWD_SUMS(!train)
    if (live && tr == 0) {
        const size_t r = ((size_t)get_group_id(1) * C + c) * 2;
        part[r] = s1;
        part[r + 1] = s2;
    }
}

/* One work-item per channel: the K records merged in order; dbeta, dgamma (dgamma_sum for the dx kernel). */
__kernel void gbn_bwd_final(__global const acc_t *part, uint C, uint K, __global const acc_t *stat_w, int is_var,
                            acc_t eps, int fix_gamma, __global acc_t *dbeta, __global acc_t *dgamma_sum,
                            __global acc_t *dgamma_out)
{
    const uint c = get_global_id(0);
    if (c >= C)
        return;
    finish_bwd(c, g_merge(part, C, K, c, 0), g_merge(part, C, K, c, 1), invstd_of(stat_w, c, is_var, eps), fix_gamma,
               dbeta, dgamma_sum, dgamma_out);
}

/* dx, normalised with the batch statistics, after gbn_bwd_final. */
__kernel void gbn_bwd_dx(G_BWD_ARGS, __global acc_t *dbeta, __global acc_t *dgamma_sum)
{
    G_TILE
    if (!live)
        return; /* no barrier in this kernel */
    acc_t a, mu, db, kx;
    G_DX_PASS(c, 1);
    g_dx(x, dy, dx, C, inner, c, p0 + tr, p1, RG, a, mu, db, kx, beta[c]);
}

/* The whole of a small problem: one work-group per tile of channels over all m positions (L = m). */
__kernel void gbn_bwd_fused(G_BWD_ARGS, __global acc_t *dbeta, __global acc_t *dgamma_sum, __global acc_t *dgamma_out,
                            __local acc_t *red)
{
    G_TILE
    G_BWD_SUMS(!train)
    if (live && tr == 0)
        finish_bwd(c, s1, s2, invstd_of(stat_w, c, is_var, eps), fix_gamma, dbeta, dgamma_sum, dgamma_out);
    barrier(CLK_GLOBAL_MEM_FENCE); /* dbeta, dgamma_sum of the tile's channels, written just above */
    if (live && train) {
        acc_t a, mu, db, kx;
        G_DX_PASS(c, 1);
        g_dx(x, dy, dx, C, inner, c, p0 + tr, p1, RG, a, mu, db, kx, beta[c]);
    }
}
