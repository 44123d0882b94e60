@echo off
rem Run the test suite on Windows (after bin\setup.cmd). Extra arguments go to pytest.
setlocal
call "%~dp0setup.cmd" || exit /b 2
cd /d "%~dp0.."
.venv\Scripts\python.exe -m pytest %*
