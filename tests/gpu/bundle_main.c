/* bundle_main.c: the one executable of the GPU bundle (make gpu-bundle).
 *
 * The bundle links its programs into one binary, so the libraries linked
 * statically (and the CUDA kernels) are in it once: bin/modula-engine, bin/gpu-ops,
 * bin/gpu-step and bin/moe-dump are links to bin/modula-bundle, which runs the program its name says (or the
 * one named by its first argument). Each program's main() was renamed
 * bundle_main_<program> by objcopy when the bundle was linked; this file is
 * not part of any other build.
 */
#include <stdio.h>
#include <string.h>

int bundle_main_modula_engine(int argc, char **argv);
int bundle_main_gpu_ops(int argc, char **argv);
int bundle_main_gpu_step(int argc, char **argv);
int bundle_main_moe_dump(int argc, char **argv);

static const struct {
	const char *name;
	int (*main)(int argc, char **argv);
} s_programs[] = {
	{ "modula-engine", bundle_main_modula_engine },
	{ "gpu-ops", bundle_main_gpu_ops },
	{ "gpu-step", bundle_main_gpu_step },
	{ "moe-dump", bundle_main_moe_dump },
};

int main(int argc, char **argv)
{
	const char *name = strrchr(argv[0], '/') ? strrchr(argv[0], '/') + 1 : argv[0];
	size_t n = sizeof s_programs / sizeof s_programs[0];

	if (!strcmp(name, "modula-bundle") && argc > 1) {
		name = argv[1];
		argc--;
		argv++;
	}
	for (size_t i = 0; i < n; i++)
		if (!strcmp(name, s_programs[i].name))
			return s_programs[i].main(argc, argv);
	fprintf(stderr, "modula-bundle: unknown program '%s': run it as modula-engine, gpu-ops, gpu-step or moe-dump\n",
		name);
	return 2;
}
