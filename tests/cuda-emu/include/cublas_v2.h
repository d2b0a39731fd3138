/* the CPU emulation of CUDA: see tests/cuda-emu/emu.h */
#include "../emu_api.h"
