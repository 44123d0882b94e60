import pytest
from hypothesis import given, settings, strategies as st

from cioctasks import udl

DRIVER = "ODBC Driver 18 for SQL Server"


def write_udl(path, init_string, encoding="utf-16"):
    text = "[oledb]\r\n; Everything after this line is an OLE DB initstring\r\n" + init_string + "\r\n"
    path.write_bytes(text.encode(encoding))
    return path


def test_a_cioc_udl_in_utf16_becomes_an_odbc_string_for_sql_server(tmp_path):
    path = write_udl(
        tmp_path / "cron_job_runner.udl",
        "Provider=SQLOLEDB.1;Password=pa55word;Persist Security Info=True;User ID=cioc_maint;"
        "Initial Catalog=ciocdemo;Data Source=sql01\\CIOC",
    )
    assert path.read_bytes().startswith(b"\xff\xfe")
    assert udl.connection_string(path, DRIVER) == (
        "Driver={ODBC Driver 18 for SQL Server};Server=sql01\\CIOC;Database=ciocdemo;"
        "UID=cioc_maint;PWD=pa55word;TrustServerCertificate=yes"
    )


def test_quoted_values_may_hold_semicolons_equals_and_doubled_quotes(tmp_path):
    path = write_udl(
        tmp_path / "a.udl",
        "provider=MSOLEDBSQL;PASSWORD=\"p;a=s\"\"s\";user id='o''brien';initial catalog=db;"
        "data source=host",
        encoding="utf-8",
    )
    properties = udl.read(path)
    assert properties["password"] == 'p;a=s"s'
    assert properties["user id"] == "o'brien"
    odbc = udl.to_odbc(properties, DRIVER)
    assert 'PWD={p;a=s"s}' in odbc and "UID=o'brien" in odbc


def test_integrated_security_becomes_a_trusted_connection(tmp_path):
    path = write_udl(
        tmp_path / "a.udl",
        "Provider=SQLNCLI11.1;Integrated Security=SSPI;Initial Catalog=db;Data Source=host",
    )
    odbc = udl.connection_string(path, "SQL Server")
    assert "Trusted_Connection=yes" in odbc and "UID" not in odbc


def test_msdasql_passes_extended_properties_or_a_dsn_through(tmp_path):
    path = write_udl(
        tmp_path / "a.udl",
        'Provider=MSDASQL.1;Persist Security Info=False;'
        'Extended Properties="Driver=SQLite3;Database=C:\\data\\site.sqlite"',
    )
    assert udl.connection_string(path, DRIVER) == "Driver=SQLite3;Database=C:\\data\\site.sqlite"
    write_udl(path, "Provider=MSDASQL.1;Data Source=CIOCDSN")
    assert udl.connection_string(path, DRIVER) == "DSN=CIOCDSN"


@pytest.mark.parametrize(
    "content, reason",
    [
        (b"\x00\x01\x02binary\xff", "not a text file"),
        ("[oledb]\r\n; comment only\r\n".encode("utf-16"), "no OLE DB init string"),
        ("[oledb]\r\nPassword=topsecret;Data Source=x\r\n".encode("utf-16"), "no Provider"),
        (
            "[oledb]\r\nProvider=Microsoft.Jet.OLEDB.4.0;Password=topsecret;Data Source=x\r\n".encode(
                "utf-16"
            ),
            "unknown provider",
        ),
        ("[oledb]\r\nProvider=SQLOLEDB;Password='topsecret\r\n".encode("utf-16"), "unterminated"),
    ],
)
def test_a_bad_udl_is_one_error_naming_the_file_and_never_the_password(tmp_path, content, reason):
    path = tmp_path / "bad.udl"
    path.write_bytes(content)
    with pytest.raises(udl.UdlError) as error:
        udl.connection_string(path, DRIVER)
    message = str(error.value)
    assert message.startswith(f"bad UDL {path}: ")
    assert reason in message
    assert "topsecret" not in message


def test_a_missing_udl_is_a_bad_udl_error(tmp_path):
    with pytest.raises(udl.UdlError, match="bad UDL"):
        udl.read(tmp_path / "missing.udl")


def test_mask_hides_passwords_in_init_strings_connection_strings_and_urls():
    text = (
        "Provider=SQLOLEDB;Password=abc;def PWD={x;y}} z} pwd='q''q' "
        "https://user:hunter2@example.org/x secret-literal"
    )
    masked = udl.mask(text, secrets=["secret-literal"])
    for secret in ("abc", "x;y", "q'q", "hunter2", "secret-literal"):
        assert secret not in masked
    assert "Password=***" in masked and "PWD=***" in masked


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=600))
def test_arbitrary_bytes_raise_nothing_but_a_bad_udl_error(data):
    try:
        properties = udl.parse_bytes(data, "fuzz.udl")
    except udl.UdlError as error:
        assert str(error).startswith("bad UDL fuzz.udl: ")
        return
    try:
        udl.to_odbc(properties, DRIVER, "fuzz.udl")
    except udl.UdlError:
        pass


values = st.text(alphabet=st.characters(blacklist_categories=("Cs", "Cc")), max_size=30)
keys = st.text(alphabet="abcdefghijklmnopqrstuvwxyz ", min_size=1, max_size=12).map(str.strip).filter(bool)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(keys, values, max_size=6))
def test_quoted_init_strings_parse_back_to_the_same_properties(properties):
    init = ";".join(f'{k}="{v.replace(chr(34), chr(34) * 2)}"' for k, v in properties.items())
    parsed = udl.parse_init_string(init)
    assert parsed == {k.lower(): v for k, v in properties.items()}


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=200))
def test_arbitrary_text_files_raise_nothing_but_a_bad_udl_error(text):
    data = ("[oledb]\r\n" + text).encode("utf-16")
    try:
        udl.parse_bytes(data, "t.udl")
    except udl.UdlError:
        pass
