// Per-image sum and sum of squares of the 4-neighbour Laplacian over the valid
// (interior) region of a batch of float32 luma images, laid out (N, H, W) C-contiguous.
//
// Launch: grid = (chunks_per_image, N), block = (LAPLACIAN_THREADS,).
// Block (c, n) covers rows [1 + c*rows_per_chunk, ...) of image n, so a large image
// is spread over many SMs while a batch of small images still fills the grid.
// out has shape (N, 2) float64 and must be zeroed by the caller: blocks add into it.
//
// Accumulation is in double: the variance is formed as E[x^2] - E[x]^2 on the host
// side, which loses everything to cancellation in float32 for 256x256 images.

#define LAPLACIAN_THREADS 256

extern "C" __global__ void laplacian_stats(
    const float* __restrict__ y,
    const int h,
    const int w,
    const int rows_per_chunk,
    double* __restrict__ out)
{
    const int n = blockIdx.y;
    const int row0 = 1 + blockIdx.x * rows_per_chunk;
    const int row1 = min(row0 + rows_per_chunk, h - 1);
    const int inner_w = w - 2;

    double s = 0.0;
    double ss = 0.0;
    if (row0 < row1 && inner_w > 0) {
        const float* img = y + (size_t)n * h * w;
        const long long count = (long long)(row1 - row0) * inner_w;
        for (long long i = threadIdx.x; i < count; i += blockDim.x) {
            const int r = row0 + (int)(i / inner_w);
            const int c = 1 + (int)(i % inner_w);
            const float* p = img + (size_t)r * w + c;
            // Same association order as the NumPy reference so float32 results match closely.
            const float lap = p[-w] + p[w] + p[-1] + p[1] - 4.0f * p[0];
            s += lap;
            ss += (double)lap * lap;
        }
    }

    __shared__ double sh_s[LAPLACIAN_THREADS];
    __shared__ double sh_ss[LAPLACIAN_THREADS];
    sh_s[threadIdx.x] = s;
    sh_ss[threadIdx.x] = ss;
    __syncthreads();
    for (int stride = blockDim.x / 2; stride > 0; stride >>= 1) {
        if (threadIdx.x < stride) {
            sh_s[threadIdx.x] += sh_s[threadIdx.x + stride];
            sh_ss[threadIdx.x] += sh_ss[threadIdx.x + stride];
        }
        __syncthreads();
    }
    if (threadIdx.x == 0) {
        atomicAdd(&out[2 * n], sh_s[0]);
        atomicAdd(&out[2 * n + 1], sh_ss[0]);
    }
}
