// SAD cost volume for block matching: the CUDA twin of motion.sad_cost_volume.
//
// prev, cur: (n, h, w) float32 luma, C-contiguous.
// pred:      (n, nby, nbx, 2) int32 search centre (dy, dx) of every block.
// cost:      (n, nby, nbx, K) float32 output, K = (2*radius+1)^2, candidate k = (dy+r)*(2r+1) + (dx+r).
//
// cost[b, k] = mean over the block x block pixels of |cur(y, x) - prev(y + pdy + dy, x + pdx + dx)|
// with prev's coordinates clamped to the frame (edge replication), exactly as the NumPy reference.
//
// Launch: 1-D grid, one thread per (image, block, candidate); blockDim = BLOCK_MATCH_THREADS.
// Neighbouring threads handle neighbouring candidates of one block, so their cur reads coincide
// (broadcast from L1) and their prev reads overlap: a search window is read from cache, not DRAM.
// Blocks of 8x8 and radius <= 4 keep each thread's loop at 64 pixels; no shared memory is needed
// for frames at analysis resolution (144p), where the whole volume is a few hundred kB.

#define BLOCK_MATCH_THREADS 128

extern "C" __global__ void block_match_sad(
    const float* __restrict__ prev,
    const float* __restrict__ cur,
    const int* __restrict__ pred,
    float* __restrict__ cost,
    const int n,
    const int h,
    const int w,
    const int nby,
    const int nbx,
    const int block,
    const int radius)
{
    const int side = 2 * radius + 1;
    const int k_count = side * side;
    const long long total = (long long)n * nby * nbx * k_count;
    const long long tid = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (tid >= total) {
        return;
    }
    const int k = (int)(tid % k_count);
    const long long b = tid / k_count;          // flat (image, by, bx)
    const int bx = (int)(b % nbx);
    const int by = (int)((b / nbx) % nby);
    const int img = (int)(b / ((long long)nbx * nby));

    const int dy = pred[2 * b] + k / side - radius;
    const int dx = pred[2 * b + 1] + k % side - radius;

    const float* p = prev + (size_t)img * h * w;
    const float* c = cur + (size_t)img * h * w;
    const int y0 = by * block;
    const int x0 = bx * block;

    float s = 0.0f;
    for (int iy = 0; iy < block; ++iy) {
        const int y = y0 + iy;
        const int ry = min(max(y + dy, 0), h - 1);
        const float* crow = c + (size_t)y * w;
        const float* prow = p + (size_t)ry * w;
        for (int ix = 0; ix < block; ++ix) {
            const int x = x0 + ix;
            const int rx = min(max(x + dx, 0), w - 1);
            s += fabsf(crow[x] - prow[rx]);
        }
    }
    cost[tid] = s / (float)(block * block);
}
