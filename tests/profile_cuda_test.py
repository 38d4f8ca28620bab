#!/usr/bin/env python3
"""bench/profile_cuda.py's reading of Nsight Compute's CSV, on a sample in
ncu's details layout (no GPU needed): per-launch metrics, ncu's messages
around the rows skipped, values with thousands separators, and the table
row's per-element figures, the warp-state row (each stall's share and
the largest stall)."""
import os
import stat
import sys
import tempfile
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
    row(0, "smsp__warps_eligible.avg.per_cycle_active", "warp", "0.37"),
    row(0, "l1tex__throughput.avg.pct_of_peak_sustained_active", "%",
        "47.25"),
    row(0, "smsp__warp_issue_stalled_long_scoreboard_per_warp_active.pct",
        "%", "41.52"),
    row(0, "smsp__warp_issue_stalled_short_scoreboard_per_warp_active.pct",
        "%", "12.04"),
    row(0, "smsp__warp_issue_stalled_selected_per_warp_active.pct", "%",
        "50.00"),
    row(0, "smsp__warp_issue_stalled_barrier_per_warp_active.pct", "%",
        "n/a"),
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

    def test_stall_row_names_the_largest_stall(self):
        launch = profile_cuda.parse_details_csv(SAMPLE)["0"]
        line = profile_cuda.stall_row_for("bf16 layer_norm 768", launch)
        cells = [c.strip() for c in line.strip("|").split("|")]
        names = [name for name, _ in profile_cuda.STALLS]
        self.assertEqual(len(cells), 4 + len(names) + 1)
        self.assertEqual(cells[:4], ["bf16 layer_norm 768",
                                     "StagedWarpKernel<BF16, BF16, 6>",
                                     "0.37", "47 %"])
        stall = dict(zip(names, cells[4:-1]))
        self.assertEqual(stall["long scoreboard"], "41.5")
        self.assertEqual(stall["short scoreboard"], "12.0")
        self.assertEqual(stall["barrier"], "?")  # ncu's n/a
        self.assertEqual(stall["wait"], "?")  # not in the CSV
        self.assertEqual(stall["selected"], "50.0")
        # Issuing is not a stall, however large.
        self.assertEqual(cells[-1], "long scoreboard")

    def test_every_stall_is_asked_of_ncu(self):
        asked = [m for _, m in profile_cuda.METRICS]
        for _, reason in profile_cuda.STALLS:
            self.assertIn("smsp__warp_issue_stalled_%s_per_warp_active.pct"
                          % reason, asked)
        self.assertEqual(len(asked), len(set(asked)))

    def test_kernel_names_lose_their_namespaces(self):
        self.assertEqual(
            profile_cuda.short_kernel(
                "void normserve::cuda::internal::<unnamed>::StagedBlockKernel<"
                "normserve::cuda::internal::F32, normserve::cuda::internal::F16"
                ", true, (normserve::cuda::internal::RowVariant)1>("
                "normserve::cuda::internal::KernelArgs)"),
            "StagedBlockKernel<F32, F16, true, (RowVariant)1>")


# A fake ncu that writes SAMPLE and logs each call. MODE "refuse": it
# refuses the warp-state metrics (as a version that does not know one of
# them would); "crash": its first run fails as a crashed benchmark would.
FAKE_NCU = """#!%s
import os, sys
sys.path.insert(0, %r)
import profile_cuda_test
calls, mode = %r, %r
with open(calls, "a") as f:
    f.write(" ".join(sys.argv[1:]) + "\\n")
if mode == "refuse" and "warp_issue_stalled" in " ".join(sys.argv):
    sys.exit("==ERROR== Failed to find metric smsp__warp_issue_stalled_x")
if mode == "crash" and len(open(calls).read().splitlines()) == 1:
    sys.exit("==ERROR== The application returned an error code (11).")
with open(sys.argv[sys.argv.index("--log-file") + 1], "w") as log:
    log.write(profile_cuda_test.SAMPLE)
"""


class MainTest(unittest.TestCase):
    def run_main(self, mode):
        """(status, ncu's argument lines, ncu_kernels.md) of profile_cuda
        over two cases with a fake ncu in `mode`."""
        with tempfile.TemporaryDirectory() as tmp:
            ncu = os.path.join(tmp, "ncu")
            calls = os.path.join(tmp, "calls")
            with open(ncu, "w") as f:
                f.write(FAKE_NCU % (sys.executable, os.path.dirname(
                    os.path.abspath(__file__)), calls, mode))
            os.chmod(ncu, stat.S_IRWXU)
            out = os.path.join(tmp, "out")
            sys.argv = ["profile_cuda.py", "--bench", "bench", "--out", out,
                        "--ncu", ncu, "--case", "one=BM_A/=bf16",
                        "--case", "two=BM_B/=f32"]
            status = profile_cuda.main()
            with open(calls) as f:
                asked = f.read().splitlines()
            with open(os.path.join(out, "ncu_kernels.md")) as f:
                return status, asked, f.read()

    def test_an_ncu_without_the_warp_state_metrics_still_profiles(self):
        status, asked, report = self.run_main("refuse")
        self.assertEqual(status, 0)
        # The first case twice (refused, then without), the second once,
        # without.
        self.assertEqual(len(asked), 3)
        self.assertIn("warp_issue_stalled", asked[0])
        self.assertNotIn("warp_issue_stalled", asked[1])
        self.assertNotIn("warp_issue_stalled", asked[2])
        self.assertIn("| one | StagedWarpKernel<BF16, BF16, 6> |", report)
        self.assertIn("| two | StagedWarpKernel<BF16, BF16, 6> |", report)
        self.assertNotIn("not profiled", report)

    def test_a_failed_run_does_not_drop_the_warp_state_metrics(self):
        status, asked, report = self.run_main("crash")
        self.assertEqual(status, 0)
        self.assertEqual(len(asked), 3)
        # The later case still asks for them.
        self.assertIn("warp_issue_stalled", asked[2])
        self.assertNotIn("not profiled", report)

    def test_only_an_error_line_about_a_metric_is_a_refusal(self):
        self.assertTrue(profile_cuda.refused_metrics(
            "==PROF== Connected\n==ERROR== Failed to find metric x"))
        self.assertFalse(profile_cuda.refused_metrics(
            "==ERROR== The application returned an error code (11)."))
        self.assertFalse(profile_cuda.refused_metrics(HEADER))


if __name__ == "__main__":
    unittest.main()
