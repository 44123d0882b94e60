@echo off
rem Build the sample world in .\demo, run every task against it, show what happened.
setlocal
call "%~dp0setup.cmd" || exit /b 2
cd /d "%~dp0.."
.venv\Scripts\python.exe bin\demo.py %*
