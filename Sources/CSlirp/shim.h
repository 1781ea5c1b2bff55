// libslirp from Debian's libslirp-dev (pkg-config "slirp"); see Package.swift.
#include <libslirp.h>
