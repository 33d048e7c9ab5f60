/* Memory-copy roofline: dst = src, four floats per work-item where possible, the tail one by one.
 * n4: number of float4 elements; n: number of floats. */
__kernel void copy_f4(__global const float4 *src, __global float4 *dst, uint n4,
                      __global const float *src1, __global float *dst1, uint n)
{
    uint i = get_global_id(0);
    if (i < n4)
        dst[i] = src[i];
    uint tail = 4 * n4 + i;
    if (i < n - 4 * n4)
        dst1[tail] = src1[tail];
}
