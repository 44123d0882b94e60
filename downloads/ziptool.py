"""Pack files into a password archive (.zip with AES-256, or .7z with AES-256 and encrypted
names), read it back with the password, then replace OUT atomically.

The password is read from the environment variable named by --password-env, never from the
command line, where other users and process listings could see it.

    python downloads/ziptool.py OUT FILE... --password-env VAR [--level N]
"""

import argparse
import os
import sys

from cioctasks import archive
from cioctasks.errors import FAILED, OK, USAGE


def build_parser():
    parser = argparse.ArgumentParser(
        prog="ziptool", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("output", help="the archive to write (.zip or .7z)")
    parser.add_argument("files", nargs="+", help="files to store, under their own names")
    parser.add_argument("--password-env", required=True, metavar="VAR",
                        help="name of the environment variable holding the password")
    parser.add_argument("--level", type=int, default=6, choices=range(0, 10), metavar="0-9",
                        help="compression level (default 6)")
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    password = os.environ.get(args.password_env)
    if not password:
        print(f"ziptool: error: the variable {args.password_env} is not set or empty",
              file=sys.stderr)
        return USAGE
    try:
        archive.format_of(args.output)
        size = archive.pack(args.output, args.files, password, level=args.level)
    except archive.ArchiveError as error:
        print(f"ziptool: error: {error}", file=sys.stderr)
        return FAILED if os.path.splitext(args.output)[1].lower() in (".zip", ".7z") else USAGE
    print(f"{args.output}: {len(args.files)} files, {size} bytes, verified")
    return OK


if __name__ == "__main__":
    sys.exit(main())
