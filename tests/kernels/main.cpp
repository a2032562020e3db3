// tests/kernels/main.cpp — Catch2 main for the kernel tests (kernel_tests, ctest prefix "Kernels.").
#define CATCH_CONFIG_MAIN
#include <catch2/catch.hpp>
