// OpenBLAS from Debian's libopenblas-dev: cblas.h lives on the default multiarch include path.
#include <cblas.h>
