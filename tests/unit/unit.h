/* unit.h - a tiny self-registering unit test harness.
 *
 *   UNIT_TEST(buf_grows) { ... CHECK(x == 1); CHECK_STR(a, "b"); }
 *
 * The binary prints "ok NAME" or "FAIL NAME: file:line: expr" per test and
 * ends with "unit: N passed, M failed"; run one test with argv[1] = NAME. */
#ifndef UNIT_H
#define UNIT_H

#include <stdio.h>
#include <string.h>

struct unit_case {
	const char *name;
	void (*fn)(void);
	struct unit_case *next;
};
void unit_register(struct unit_case *c);
void unit_fail(const char *file, int line, const char *expr);
/* A fresh empty temporary directory for the running test (removed after). */
const char *unit_tmpdir(void);
/* Where p lies, by /proc/self/maps: 1 in a file's mapping, 0 in anonymous
 * memory, -1 not found. */
int unit_in_file_mapping(const void *p);

#define UNIT_TEST(name)                                                        \
	static void unit_fn_##name(void);                                      \
	static struct unit_case unit_case_##name = {#name, unit_fn_##name, 0}; \
	__attribute__((constructor)) static void unit_reg_##name(void)         \
	{                                                                      \
		unit_register(&unit_case_##name);                              \
	}                                                                      \
	static void unit_fn_##name(void)

#define CHECK(expr)                                                            \
	do {                                                                   \
		if (!(expr)) {                                                 \
			unit_fail(__FILE__, __LINE__, #expr);                  \
			return;                                                \
		}                                                              \
	} while (0)
#define CHECK_STR(a, b) CHECK(strcmp((a), (b)) == 0)

#endif
