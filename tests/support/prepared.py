# A MySQL client that uses server-side prepared statements (COM_STMT_PREPARE/EXECUTE) through
# Oracle's own driver, driven line by line on stdin; answers each line with one line ("ok" or
# "error"). The twin of prepared.pl, which speaks through MariaDB's client library.
#   prepare NAME SQL     execute NAME [ARG...]     close NAME
import sys

import mysql.connector

connection = mysql.connector.connect(unix_socket=sys.argv[1], user="root", autocommit=True)
statements = {}
for line in sys.stdin:
    verb, name, *rest = line.strip().rstrip(";").split(" ", 2)
    ok = True
    try:
        if verb == "prepare":
            # The driver prepares at the first execute: prepare now, as the Perl driver does.
            cursor = connection.cursor(prepared=True)
            # The cursor's execute() then finds its statement prepared (`is`: the same text).
            cursor._prepared = connection.cmd_stmt_prepare(rest[0].encode())
            cursor._executed = rest[0]
            statements[name] = (cursor, rest[0])
        elif verb == "execute":
            cursor, sql = statements[name]
            cursor.execute(sql, tuple((rest[0] if rest else "").split()))
            if cursor.with_rows:
                cursor.fetchall()
        elif verb == "close":
            statements.pop(name)[0].close()
    except mysql.connector.Error:
        ok = False
    print("ok" if ok else "error", flush=True)
