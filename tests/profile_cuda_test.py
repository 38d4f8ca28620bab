#!/usr/bin/env python3
"""bench/profile_cuda.py's reading of Nsight Compute's CSV, on a sample in
ncu's details layout (no GPU needed): per-launch metrics, ncu's messages
around the rows skipped, values with thousands separators, and the table
row's per-element figures."""
import os
import sys
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                "..", "bench"))
import profile_cuda  # noqa: E402

HEADER = ('"ID","Process ID","Process Name","Host Name","Kernel Name",'
          '"Context","Stream","Block Size","Grid Size","Device","CC",'
          '"Section Name","Metric Name","Metric Unit","Metric Value"')
KERNEL = ("void normserve::cuda::internal::<unnamed>::StagedWarpKernel<"
          "normserve::cuda::internal::BF16, normserve::cuda::internal::BF16,"
          " 6>(normserve::cuda::internal::KernelArgs)")


def row(launch, metric, unit, value):
    return ('"%d","4242","normalize_cuda_bench","127.0.0.1","%s","1","7",'
            '"(128, 1, 1)","(1056, 1, 1)","0","9.0",'
            '"Command line profiler metrics","%s","%s","%s"'
            % (launch, KERNEL, metric, unit, value))


SAMPLE = "\n".join([
    "==PROF== Connected to process 4242",
    HEADER,
    row(0, "smsp__thread_inst_executed.sum", "inst", "5,508,096,000"),
    row(0, "smsp__inst_executed.sum", "inst", "172,128,000"),
    row(0, "smsp__issue_active.avg.per_cycle_active", "", "0.81"),
    row(0, "dram__throughput.avg.pct_of_peak_sustained_elapsed", "%", "88.5"),
    row(0, "sm__warps_active.avg.pct_of_peak_sustained_active", "%", "61.2"),
    row(0, "gpu__time_duration.sum", "usecond", "290.50"),
    "==PROF== Disconnected from process 4242",
])


class ParseTest(unittest.TestCase):
    def test_reads_one_launch_with_every_metric(self):
        launches = profile_cuda.parse_details_csv(SAMPLE)
        self.assertEqual(list(launches), ["0"])
        launch = launches["0"]
        self.assertEqual(launch["smsp__thread_inst_executed.sum"], 5508096000)
        self.assertEqual(launch["smsp__issue_active.avg.per_cycle_active"],
                         0.81)
        self.assertEqual(launch["gpu__time_duration.sum unit"], "usecond")
        self.assertEqual(launch["grid"], "(1056, 1, 1)")

    def test_no_header_is_no_launch(self):
        self.assertEqual(profile_cuda.parse_details_csv("==ERROR== x\n"), {})

    def test_row_gives_instructions_per_element(self):
        launch = profile_cuda.parse_details_csv(SAMPLE)["0"]
        elements = (512 << 20) // 2
        line = profile_cuda.row_for("bf16 layer_norm 768", launch, elements)
        cells = [c.strip() for c in line.strip("|").split("|")]
        self.assertEqual(cells[1], "StagedWarpKernel<BF16, BF16, 6>")
        self.assertEqual(cells[3], "%.2f" % (5508096000 / elements))
        self.assertEqual(cells[4], "%.2f" % (172128000 / elements))
        self.assertEqual(cells[5], "0.81")
        self.assertEqual(cells[8], "290.5 usecond")

    def test_kernel_names_lose_their_namespaces(self):
        self.assertEqual(
            profile_cuda.short_kernel(
                "void normserve::cuda::internal::<unnamed>::StagedBlockKernel<"
                "normserve::cuda::internal::F32, normserve::cuda::internal::F16"
                ", true, (normserve::cuda::internal::RowVariant)1>("
                "normserve::cuda::internal::KernelArgs)"),
            "StagedBlockKernel<F32, F16, true, (RowVariant)1>")


if __name__ == "__main__":
    unittest.main()
