# A MariaDB client that uses server-side prepared statements (COM_STMT_PREPARE/EXECUTE),
# driven line by line on stdin; answers each line with one line ("ok" or "error").
#   prepare NAME SQL     execute NAME [ARG...]     close NAME
use strict;
use warnings;
use DBI;

$| = 1;
my ($socket) = @ARGV;
my $dbh = DBI->connect("DBI:MariaDB:mariadb_socket=$socket", "root", "",
    { RaiseError => 0, PrintError => 0, mariadb_server_prepare => 1 })
    or die "connect: $DBI::errstr\n";
my %statements;
while (my $line = <STDIN>) {
    $line =~ s/;?\s*$//;
    my ($verb, $name, $rest) = split / /, $line, 3;
    my $ok;
    if ($verb eq 'prepare') {
        $ok = $statements{$name} = $dbh->prepare($rest);
    } elsif ($verb eq 'execute') {
        my $statement = $statements{$name};
        $ok = $statement->execute(split / /, $rest // '');
        $statement->fetchall_arrayref if $ok && $statement->{NUM_OF_FIELDS};
    } elsif ($verb eq 'close') {
        # Dropping the handle closes the statement on the server.
        $ok = delete $statements{$name};
    }
    print $ok ? "ok\n" : "error\n";
}
