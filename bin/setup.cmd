@echo off
rem Install cioctasks into .venv on Windows. Needs Python 3.11+ on PATH (py launcher or python),
rem the Microsoft ODBC Driver 18 for SQL Server, and for the demo the SQLite3 ODBC driver.
setlocal
cd /d "%~dp0.."
if not exist .venv\Scripts\python.exe (
    echo setup: creating .venv
    py -3 -m venv .venv 2>nul || python -m venv .venv || exit /b 2
)
.venv\Scripts\python.exe -c "import sys; sys.exit(sys.version_info < (3, 11))" || (
    echo setup: cioctasks needs Python 3.11 or newer: delete .venv and install a newer Python 1>&2
    exit /b 2
)
.venv\Scripts\python.exe -m pip install -q --upgrade pip >nul
.venv\Scripts\python.exe -m pip install -q -e ".[test]" || exit /b 2
where 7z >nul 2>nul || echo setup: 7-Zip (7z.exe) is not on PATH; the archive tests will be skipped
