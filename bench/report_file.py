"""How the bench scripts hand over a Markdown report: titled with today's
date, printed, and written to a dated file in the output folder (created if
missing)."""
import datetime
import os


def publish(title, lines, out_dir, stem):
    """Prints "# TITLE, <date>" and `lines` (a blank line between), writes
    them to OUT_DIR/STEM_<date>.md and says where; returns the file's
    path."""
    today = datetime.date.today().isoformat()
    text = "\n".join([f"# {title}, {today}", "", *lines]) + "\n"
    print(text)
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, f"{stem}_{today}.md")
    with open(path, "w") as fh:
        fh.write(text)
    print(f"written to {path}")
    return path
