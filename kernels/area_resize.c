/* Exact area-average downscale of an 8-bit (H, W, C) image.
 *
 * Why hand-written: the image pipeline is CPU-bound, and OpenCV's INTER_AREA takes a scalar
 * table-driven path for non-integer factors: 1.0-1.5 ms per decoded photo on this machine, the
 * largest cost after the JPEG decode itself; this kernel takes 0.4-0.55 ms. Each output pixel
 * is the exact mean of the source area it covers, rounded half up: the sums are integers held
 * exactly in floating point, so the result does not depend on rounding order.
 * kernels/area_resize.py holds the NumPy reference that tests compare against, and the
 * fallback used when this module is not built.
 *
 * Output column j covers source columns [j*W/OW, (j+1)*W/OW). Scaled by OW, the bounds are the
 * integers j*W and (j+1)*W, and source column x covers [x*OW, (x+1)*OW): every overlap is an
 * integer weight <= OW, the weights of one output sum to W, and those of a 2-D output pixel to
 * W*H. Exactness needs W*H <= 2**30 for the rounding below (the caller checks; our pixel limit
 * is far lower). Downscaling only (OH <= H and OW <= W).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <stdlib.h>

/* round(sum / area), halves up, without a division per value (64-bit divisions cost more than
 * all the arithmetic). sum + area/2 is exact in a double. The true quotient q is a fraction
 * with denominator area, so when it is not an integer it is at least 1/area >= 2**-30 away from
 * one; the computed product is within ~1e-13 of q (q <= 256). Adding 1e-11 before truncating
 * therefore lands on floor(q) in every case, exact integers included. */
static inline uint8_t round_div(double sum, double area, double inv_area)
{
    return (uint8_t)(int)((sum + 0.5 * area) * inv_area + 1e-11);
}

typedef struct {
    int first;  /* first source index */
    int count;  /* number of source indices with a non-zero weight */
} span_t;

/* Spans and weights (max_taps per output) of one axis. */
static void make_taps(int n_in, int n_out, span_t *spans, uint32_t *w, int max_taps)
{
    for (int i = 0; i < n_out; i++) {
        int64_t lo = (int64_t)i * n_in, hi = (int64_t)(i + 1) * n_in;
        int x0 = (int)(lo / n_out), x1 = (int)((hi - 1) / n_out);
        spans[i].first = x0;
        spans[i].count = x1 - x0 + 1;
        for (int x = x0; x <= x1; x++) {
            int64_t a = (int64_t)x * n_out, b = a + n_out;
            w[(size_t)i * max_taps + (x - x0)] = (uint32_t)((hi < b ? hi : b) - (lo > a ? lo : a));
        }
    }
}

/* Horizontal taps for one output row of 3-channel pixels, with taps a compile-time constant
 * (every output gets the same number, zero-padded) so the loop unrolls without branches. */
static inline __attribute__((always_inline)) void
row_rgb(const double *col, const int *first, const double *wx, int taps, int ow, double area, double inv,
        uint8_t *d)
{
    for (int j = 0; j < ow; j++) {
        const double *p = col + (size_t)first[j] * 3;
        const double *wj = wx + (size_t)j * taps;
        double a0 = 0, a1 = 0, a2 = 0;
        for (int k = 0; k < taps; k++) {
            a0 += wj[k] * p[3 * k];
            a1 += wj[k] * p[3 * k + 1];
            a2 += wj[k] * p[3 * k + 2];
        }
        d[3 * j] = round_div(a0, area, inv);
        d[3 * j + 1] = round_div(a1, area, inv);
        d[3 * j + 2] = round_div(a2, area, inv);
    }
}

static void row_any(const double *col, const int *first, const double *wx, int taps, int ow, int c,
                    double area, double inv, uint8_t *d)
{
    for (int j = 0; j < ow; j++)
        for (int ch = 0; ch < c; ch++) {
            double a = 0;
            for (int k = 0; k < taps; k++)
                a += wx[(size_t)j * taps + k] * col[((size_t)first[j] + k) * c + ch];
            d[(size_t)j * c + ch] = round_div(a, area, inv);
        }
}

static int area_resize(const uint8_t *src, int h, int w, int c, uint8_t *dst, int oh, int ow)
{
    int tx = w / ow + 2, ty = h / oh + 2;
    size_t in_row = (size_t)w * c, out_row = (size_t)ow * c;
    span_t *sx = malloc(sizeof(span_t) * ow), *sy = malloc(sizeof(span_t) * oh);
    uint32_t *wx = calloc((size_t)ow * tx, sizeof(uint32_t));
    uint32_t *wy = calloc((size_t)oh * ty, sizeof(uint32_t));
    int *first = malloc(sizeof(int) * ow);
    double *wxd = calloc((size_t)ow * tx, sizeof(double));
    /* One output row's worth of source rows summed vertically: integers up to 255 * H, exact in
     * float32 below 2**24 (the fast path), else summed in double. Vertical first: that loop runs
     * over whole contiguous rows and vectorises, and the horizontal taps then run on OH rows
     * instead of H. */
    int in_float = 255 * (int64_t)h < (1 << 24);
    float *col = malloc(sizeof(float) * in_row);
    double *cold = malloc(sizeof(double) * in_row);
    int ok = sx && sy && wx && wy && first && wxd && col && cold;
    if (ok) {
        make_taps(w, ow, sx, wx, tx);
        make_taps(h, oh, sy, wy, ty);
        /* Same tap count for every output column: windows that would run past the right edge
         * start earlier, with zero weights in front. */
        int taps = 1;
        for (int j = 0; j < ow; j++)
            taps = sx[j].count > taps ? sx[j].count : taps;
        for (int j = 0; j < ow; j++) {
            int f = sx[j].first, shift = 0;
            if (f + taps > w) {
                shift = f + taps - w;
                f -= shift;
            }
            first[j] = f;
            for (int k = 0; k < sx[j].count; k++)
                wxd[(size_t)j * taps + shift + k] = (double)wx[(size_t)j * tx + k];
        }
        double area = (double)w * (double)h;
        double inv = 1.0 / area;
        for (int i = 0; i < oh; i++) {
            const uint32_t *wi = wy + (size_t)i * ty;
            const uint8_t *s = src + (size_t)sy[i].first * in_row;
            if (in_float) {
                float w0 = (float)wi[0];
                for (size_t q = 0; q < in_row; q++)
                    col[q] = w0 * (float)s[q];
                for (int k = 1; k < sy[i].count; k++) {
                    float wk = (float)wi[k];
                    s += in_row;
                    for (size_t q = 0; q < in_row; q++)
                        col[q] += wk * (float)s[q];
                }
                for (size_t q = 0; q < in_row; q++)
                    cold[q] = (double)col[q];
            } else {
                double w0 = (double)wi[0];
                for (size_t q = 0; q < in_row; q++)
                    cold[q] = w0 * (double)s[q];
                for (int k = 1; k < sy[i].count; k++) {
                    double wk = (double)wi[k];
                    s += in_row;
                    for (size_t q = 0; q < in_row; q++)
                        cold[q] += wk * (double)s[q];
                }
            }
            uint8_t *d = dst + (size_t)i * out_row;
            if (c == 3) {
                switch (taps) {  /* constant taps: unrolled */
                case 1: row_rgb(cold, first, wxd, 1, ow, area, inv, d); break;
                case 2: row_rgb(cold, first, wxd, 2, ow, area, inv, d); break;
                case 3: row_rgb(cold, first, wxd, 3, ow, area, inv, d); break;
                case 4: row_rgb(cold, first, wxd, 4, ow, area, inv, d); break;
                case 5: row_rgb(cold, first, wxd, 5, ow, area, inv, d); break;
                default: row_rgb(cold, first, wxd, taps, ow, area, inv, d);
                }
            } else {
                row_any(cold, first, wxd, taps, ow, c, area, inv, d);
            }
        }
    }
    free(sx);
    free(sy);
    free(wx);
    free(wy);
    free(first);
    free(wxd);
    free(col);
    free(cold);
    return ok;
}

static PyObject *py_area_resize(PyObject *self, PyObject *args)
{
    Py_buffer src, dst;
    int h, w, c, oh, ow;
    if (!PyArg_ParseTuple(args, "y*iiiw*ii", &src, &h, &w, &c, &dst, &oh, &ow))
        return NULL;
    PyObject *result = NULL;
    if (h < 1 || w < 1 || c < 1 || oh < 1 || ow < 1 || oh > h || ow > w || (int64_t)h * w > (1 << 30)) {
        PyErr_SetString(PyExc_ValueError, "area_resize: needs 1 <= out <= in on both axes, h * w <= 2**30");
    } else if (src.len != (Py_ssize_t)h * w * c || dst.len != (Py_ssize_t)oh * ow * c) {
        PyErr_SetString(PyExc_ValueError, "area_resize: buffer sizes do not match the shapes");
    } else {
        int ok;
        Py_BEGIN_ALLOW_THREADS
        ok = area_resize((const uint8_t *)src.buf, h, w, c, (uint8_t *)dst.buf, oh, ow);
        Py_END_ALLOW_THREADS
        if (ok) {
            Py_INCREF(Py_None);
            result = Py_None;
        } else {
            PyErr_NoMemory();
        }
    }
    PyBuffer_Release(&src);
    PyBuffer_Release(&dst);
    return result;
}

static PyMethodDef methods[] = {
    {"area_resize", py_area_resize, METH_VARARGS,
     "area_resize(src, h, w, c, dst, oh, ow): exact area-average downscale of C-contiguous uint8 "
     "(h, w, c) pixels into the writable (oh, ow, c) buffer dst."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_area_resize", NULL, -1, methods};

PyMODINIT_FUNC PyInit__area_resize(void) { return PyModule_Create(&module); }
