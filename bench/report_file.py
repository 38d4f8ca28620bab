"""How the bench scripts hand over a Markdown report: printed, and written
to a file in the output folder (created if missing)."""
import os


def publish(text, out_dir, filename):
    """Prints `text`, writes it to OUT_DIR/FILENAME and says where; returns
    the file's path."""
    print(text)
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, filename)
    with open(path, "w") as fh:
        fh.write(text)
    print(f"written to {path}")
    return path
