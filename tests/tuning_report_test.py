#!/usr/bin/env python3
"""bench/tuning_report.py on a sample of the benchmark's JSON (no GPU
needed): which entries it reads, the fastest choice per case, and the
default's fraction of it."""
import json
import os
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                "..", "bench"))
import tuning_report  # noqa: E402


def entry(args, vs_copy, **extra):
    name = "BM_CudaTuning/" + "/".join(str(a) for a in args) + "/manual_time"
    e = {"name": name, "run_type": "iteration", "vs_copy": vs_copy}
    e.update(extra)
    return e


SAMPLE = {
    "context": {"cuda_device": "NVIDIA H100 80GB HBM3 (sm_90)"},
    "benchmarks": [
        entry((2, 768, 0, 0, 2, 0, 0), 0.90),   # registers
        entry((2, 768, 0, 1, 2, -1, 0), 0.88),  # the default
        entry((2, 768, 0, 1, 2, 0, 0), 0.87),   # resident blocks
        entry((2, 768, 0, 1, 3, 8, 0), 0.94),   # the best
        entry((2, 768, 0, 1, 4, 32, 0), 0.99, error_occurred=True),
        entry((0, 4096, 1, 1, 2, -1, 0), 0.93),  # add & norm: the default
        entry((0, 4096, 1, 1, 2, 0, 2), 0.91),  # residual from memory
        # With the weights argument (and the default's buffers 0,
        # kAutoStages): the default and γ β read per row.
        entry((0, 4096, 0, 1, 0, -1, 0, 0), 0.92),
        entry((0, 4096, 0, 1, 2, -1, 0, 2), 0.95),
        # RMSNorm (norm argument 2).
        entry((2, 1024, 2, 1, 0, -1, 0, 0), 0.86),
        entry((2, 1024, 2, 1, 3, 0, 0, 0), 0.90),
        {"name": "BM_CudaNormalize/0/0/4096/manual_time", "vs_copy": 0.5},
        entry((0, 4096, 1, 1, 2, 0, 0), 0.10, run_type="aggregate"),
    ],
}


class TuningReportTest(unittest.TestCase):
    def setUp(self):
        fd, self.path = tempfile.mkstemp(suffix=".json")
        with os.fdopen(fd, "w") as fh:
            json.dump(SAMPLE, fh)

    def tearDown(self):
        os.unlink(self.path)

    def test_reads_tuning_iterations_only(self):
        context, cases = tuning_report.load(self.path)
        self.assertEqual(context["cuda_device"],
                         "NVIDIA H100 80GB HBM3 (sm_90)")
        self.assertEqual(sorted(cases), [(0, 4096, 0), (0, 4096, 1),
                                         (2, 768, 0), (2, 1024, 2)])
        # Entries without the weights argument count as weights auto, and
        # their default (2 buffers then) as the default.
        self.assertEqual(cases[(2, 768, 0)], {(0, 2, 0, 0, 0): 0.90,
                                              (1, 0, -1, 0, 0): 0.88,
                                              (1, 2, 0, 0, 0): 0.87,
                                              (1, 3, 8, 0, 0): 0.94})
        self.assertEqual(cases[(0, 4096, 1)],
                         {(1, 0, -1, 0, 0): 0.93, (1, 2, 0, 2, 0): 0.91})
        self.assertEqual(cases[(0, 4096, 0)],
                         {(1, 0, -1, 0, 0): 0.92, (1, 2, -1, 0, 2): 0.95})

    def test_marks_the_best_and_the_default_fraction(self):
        _, cases = tuning_report.load(self.path)
        lines = tuning_report.table(cases).splitlines()
        self.assertEqual(
            lines[0], "| case | registers | default "
            "| 2 buf, default grid, γβ per row | 2 buf, resident "
            "| 2 buf, resident, residual from memory | 3 buf, resident "
            "| 3 buf, 8 rows | best | default / best |")
        f32, add, ln, rms = lines[2], lines[3], lines[4], lines[5]
        self.assertEqual(f32, "| f32 LayerNorm 4096 | n/a | 0.920 | **0.950** "
                         "| n/a | n/a | n/a | n/a "
                         "| 2 buf, default grid, γβ per row | 0.968 |")
        self.assertEqual(add, "| f32 add & LayerNorm 4096 | n/a | **0.930** "
                         "| n/a | n/a | 0.910 | n/a | n/a | default | 1.000 |")
        self.assertEqual(ln, "| bf16 LayerNorm 768 | 0.900 | 0.880 | n/a "
                         "| 0.870 | n/a | n/a | **0.940** | 3 buf, 8 rows "
                         "| 0.936 |")
        self.assertEqual(rms, "| bf16 RMSNorm 1024 | n/a | 0.860 | n/a | n/a "
                         "| n/a | **0.900** | n/a | 3 buf, resident "
                         "| 0.956 |")

    def test_no_tuning_results_fails(self):
        with tempfile.NamedTemporaryFile("w", suffix=".json",
                                         delete=False) as fh:
            json.dump({"benchmarks": []}, fh)
        try:
            with tempfile.TemporaryDirectory() as out:
                sys.argv = ["tuning_report.py", "--bench_json", fh.name,
                            "--out", out]
                self.assertEqual(tuning_report.main(), 1)
        finally:
            os.unlink(fh.name)


if __name__ == "__main__":
    unittest.main()
