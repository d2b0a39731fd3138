# embed.awk: turn the numbered migrations schema/NNN_what.sql into C strings
# (the generated schema/migrations.c). The .sql files stay the source of
# truth; this only quotes them. Files must be given in order.
BEGIN {
	print "/* migrations.c: generated from the schema/NNN_*.sql files by schema/embed.awk; do not edit. */"
	print "#include \"schema/migrations.h\""
	n = 0
}
FNR == 1 {
	if (n > 0)
		print ";"
	n++
	name = FILENAME
	sub(/.*\//, "", name)
	names[n] = name
	printf "static const char s_m%d[] =\n", n
}
{
	line = $0
	gsub(/\\/, "\\\\", line)
	gsub(/"/, "\\\"", line)
	gsub(/\t/, "\\t", line)
	printf "\t\"%s\\n\"\n", line
}
END {
	if (n > 0)
		print ";"
	print "const struct schema_migration schema_migrations[] = {"
	for (i = 1; i <= n; i++)
		printf "\t{ \"%s\", s_m%d },\n", names[i], i
	print "};"
	printf "const int schema_nmigrations = %d;\n", n
}
