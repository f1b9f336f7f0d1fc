# Colab or any kernel without erc_core: fetch the book's repository at the exact commit this book was built from
# (REV, written into the built chapters by scripts/run_notebooks.py) and install erc_core from it, keeping the
# machine's own torch. Does nothing where erc_core is installed (the book build) or where REV is None.
import importlib
import importlib.util
import os
import subprocess
import sys

REPO = "https://github.com/erc-book/erc-book"   # = repository.url in _config.yml
REV = None   # the book's commit; None while repository.url is a placeholder, and in the unbuilt source notebook
if importlib.util.find_spec("erc_core") is None:
    if REV is None:
        print(f"erc_core is not installed and this copy of the chapter names no published commit of {REPO} "
              "(REV = None: the repository URL is still a placeholder, or this is the unbuilt source notebook), so "
              "nothing was downloaded or installed. Install erc_core from a copy of the book's repository you "
              "trust (pip install -e 'PATH[book]') and run the notebook again.")
    else:
        if not os.path.isdir("erc-book"):
            subprocess.run(["git", "init", "-q", "erc-book"], check=True)
            subprocess.run(["git", "-C", "erc-book", "fetch", "-q", "--depth", "1", REPO, REV], check=True)
            subprocess.run(["git", "-C", "erc-book", "checkout", "-q", "FETCH_HEAD"], check=True)
        head = subprocess.run(["git", "-C", "erc-book", "rev-parse", "HEAD"], capture_output=True, text=True,
                              check=True).stdout.strip()
        if head != REV:
            raise RuntimeError(f"./erc-book is at {head}, not at the book's commit {REV}: remove it and run again")
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "./erc-book[book]"], check=True)
        importlib.invalidate_caches()
        os.chdir("erc-book/notebooks")   # the chapters read ../configs, ../grids, ../data
